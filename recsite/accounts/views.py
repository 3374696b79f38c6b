"""Sign-up and a throttled login; everything else is Django's own auth views."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts import throttle
from accounts.deletion import delete_account as delete_everywhere
from accounts.forms import DeleteAccountForm, SignUpForm
from accounts.models import Profile


def _address(request) -> str:
    return request.META.get("REMOTE_ADDR", "")


class ThrottledLoginView(LoginView):
    """Django's LoginView that refuses (HTTP 429) after too many failures for a username.

    A refused attempt never reaches the password check: an unbound form is shown, so a locked-out
    attacker cannot keep the server hashing guesses. A failed login answers 400, like every other
    invalid form on the site.
    """

    def post(self, request, *args, **kwargs):
        username = str(request.POST.get("username", ""))[:150]
        if throttle.is_locked(username, _address(request)):
            context = self.get_context_data(form=self.get_form_class()(request), locked=True)
            return render(request, self.template_name, context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        throttle.record_failure(str(self.request.POST.get("username", ""))[:150], _address(self.request))
        response = super().form_invalid(form)
        response.status_code = 400
        return response

    def form_valid(self, form):
        throttle.reset(form.get_user().get_username(), _address(self.request))
        return super().form_valid(form)


def signup(request):
    if request.user.is_authenticated:
        return redirect("recommendations")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        Profile.objects.create(user=user)
        login(request, user, backend="accounts.backends.ProfileBackend")
        messages.success(request, "Welcome! Rate a few products you like to get recommendations.")
        return redirect("recommendations")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request):
    """Confirmation page (password and a tick), then the deletion (accounts/deletion.py)."""
    form = DeleteAccountForm(request.user, request.POST or None)
    if request.method == "POST":
        address = _address(request)
        name = request.user.get_username()
        if throttle.is_locked(name, address):  # the password check is a login attempt too
            return render(request, "registration/delete_account.html", {"form": DeleteAccountForm(request.user),
                                                                        "locked": True}, status=429)
        if form.is_valid():
            delete_everywhere(request.user, request=request)
            return render(request, "registration/delete_account_done.html")
        if "password" in form.errors:
            throttle.record_failure(name, address)
    return render(request, "registration/delete_account.html", {"form": form}, status=400 if form.errors else 200)
