"""Sign-up form: Django's own, with an e-mail address for password resets."""
from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, max_length=254,
                             help_text="Used only to reset your password.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class DeleteAccountForm(forms.Form):
    """Confirmation of "Delete my account": the current password and an explicit tick."""

    password = forms.CharField(strip=False, max_length=1024, widget=forms.PasswordInput(
        attrs={"autocomplete": "current-password"}))
    confirm = forms.BooleanField(required=True, label="Yes, delete my account and everything kept about me",
                                 error_messages={"required": "Tick the box to confirm."})

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self):
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("Your password was entered incorrectly.")
        return password
