"""Forms for every input the site takes; each field is typed and bounded so hostile input gets a 400."""
from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from core.events import MAX_TEXT_CHARS

# \Z, not $: "$" also matches before a trailing newline, which would let "id\n" through.
PRODUCT_ID_REGEX = r"\A[A-Za-z0-9_.:@-]{1,128}\Z"
product_id_validator = RegexValidator(PRODUCT_ID_REGEX, "Not a product id.")


class RatingForm(forms.Form):
    rating = forms.TypedChoiceField(choices=[(i, f"{i} ★") for i in range(5, 0, -1)], coerce=int,
                                    widget=forms.RadioSelect,
                                    error_messages={"invalid_choice": "Choose from 1 to 5 stars."})
    text = forms.CharField(required=False, max_length=MAX_TEXT_CHARS, strip=True,
                           widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Optional review"}))
    # The submission's identity, made when the page was rendered (shop.templatetags.rating_tags):
    # a resubmission of the same page is the same rating. Optional for older pages and clients.
    submission_id = forms.RegexField(r"\A[A-Za-z0-9_-]{8,64}\Z", required=False, widget=forms.HiddenInput,
                                     error_messages={"invalid": "Not a submission id."})
    # Where to go afterwards: only known names, so the field cannot become an open redirect.
    next = forms.ChoiceField(required=False, choices=[("", "default"), ("recommendations", "recommendations")],
                             widget=forms.HiddenInput, error_messages={"invalid_choice": "Unknown destination."})

    def clean(self):
        # Extra fields are refused rather than ignored: a "user_id" here means someone is trying
        # to rate as somebody else, and the answer should say no, not rate as the sender.
        unknown = set(self.data) - set(self.fields) - {"csrfmiddlewaretoken"}
        if unknown:
            raise forms.ValidationError(f"Unknown fields: {', '.join(sorted(unknown))[:200]}")
        return super().clean()


class ControlForm(forms.Form):
    """"Remove my rating" and "not interested": nothing to fill in but where to go afterwards."""

    next = forms.ChoiceField(required=False, choices=[("", "default"), ("recommendations", "recommendations"),
                                                      ("product", "product")],
                             widget=forms.HiddenInput, error_messages={"invalid_choice": "Unknown destination."})

    def clean(self):
        unknown = set(self.data) - set(self.fields) - {"csrfmiddlewaretoken"}
        if unknown:
            raise forms.ValidationError(f"Unknown fields: {', '.join(sorted(unknown))[:200]}")
        return super().clean()


class CatalogQueryForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, strip=True)
    category = forms.CharField(required=False, max_length=200)
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)


class ReviewPageForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1, max_value=1000)
