"""Sign-up and a throttled login; everything else is Django's own auth views."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import LoginView
from django.shortcuts import redirect, render

from accounts import throttle
from accounts.forms import SignUpForm
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
        messages.success(request, "Welcome! Rate a few products you know to get your own recommendations.")
        return redirect("onboarding")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)
