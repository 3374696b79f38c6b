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


ONBOARDING_PREFIX = "rate_"
MAX_ONBOARDING_PICKS = 60


class OnboardingForm(forms.Form):
    """One optional star rating per offered product; at least one must be given.

    On a GET the fields are the products offered; on a POST they are the products posted (field
    ``rate_<product id>``), so a popular list refreshed in between does not lose a pick. Each id is
    checked against the product id pattern here and against the catalog when it is rated.
    """

    CHOICES = [("", "Not rated"), (5, "★★★★★ Love it"), (4, "★★★★ Like it"), (3, "★★★ It's OK"),
               (2, "★★ Not for me"), (1, "★ Dislike")]

    def __init__(self, *args, product_ids: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_bound:
            posted = [k[len(ONBOARDING_PREFIX):] for k in self.data if k.startswith(ONBOARDING_PREFIX)]
            product_ids = posted[:MAX_ONBOARDING_PICKS]
            self._too_many = len(posted) > MAX_ONBOARDING_PICKS
        for pid in product_ids:
            self.fields[ONBOARDING_PREFIX + pid] = forms.TypedChoiceField(
                choices=self.CHOICES, coerce=int, required=False, empty_value=None,
                error_messages={"invalid_choice": "Choose from 1 to 5 stars."})

    def clean(self):
        unknown = set(self.data) - set(self.fields) - {"csrfmiddlewaretoken"}
        if unknown or getattr(self, "_too_many", False):
            raise forms.ValidationError("Unknown or too many fields.")
        for name in self.fields:
            try:
                product_id_validator(name[len(ONBOARDING_PREFIX):])
            except forms.ValidationError:
                raise forms.ValidationError("Not a product id.") from None
        cleaned = super().clean()
        if not self.picks():
            raise forms.ValidationError("Rate at least one product, or skip this step.")
        return cleaned

    def picks(self) -> dict[str, int]:
        """{product id: stars} of the products the user rated."""
        return {name[len(ONBOARDING_PREFIX):]: value for name, value in (self.cleaned_data or {}).items()
                if name.startswith(ONBOARDING_PREFIX) and value}
