"""Forms for every input the site takes; each field is typed and bounded so hostile input gets a 400.

What a rating is (stars, ids, text length) comes from ``core.events``, the one contract the API
serializers (shop/serializers.py) and the workers check too.
"""
from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from core.events import EVENT_ID_PATTERN, MAX_STARS, MAX_TEXT_CHARS, MIN_STARS, PRODUCT_ID_PATTERN

product_id_validator = RegexValidator(PRODUCT_ID_PATTERN, "Not a product id.")
STARS_ERROR = f"Choose from {MIN_STARS} to {MAX_STARS} stars."


class StrictForm(forms.Form):
    """Extra fields are refused rather than ignored: a "user_id" here means someone is trying to
    act as somebody else, and the answer should say no, not act as the sender."""

    unknown_message = "Unknown fields: {}"

    def clean(self):
        unknown = set(self.data) - set(self.fields) - {"csrfmiddlewaretoken"}
        if unknown:
            raise forms.ValidationError(self.unknown_message.format(", ".join(sorted(unknown))[:200]))
        return super().clean()


def next_field(*destinations: str) -> forms.ChoiceField:
    """Where to go afterwards: only known names, so the field cannot become an open redirect."""
    return forms.ChoiceField(required=False, choices=[("", "default")] + [(d, d) for d in destinations],
                             widget=forms.HiddenInput, error_messages={"invalid_choice": "Unknown destination."})


class RatingForm(StrictForm):
    rating = forms.TypedChoiceField(choices=[(i, f"{i} ★") for i in range(MAX_STARS, MIN_STARS - 1, -1)], coerce=int,
                                    widget=forms.RadioSelect, error_messages={"invalid_choice": STARS_ERROR})
    text = forms.CharField(required=False, max_length=MAX_TEXT_CHARS, strip=True,
                           widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Optional review"}))
    # The submission's identity, made when the page was rendered (shop.templatetags.rating_tags):
    # a resubmission of the same page is the same rating (the event's id). Optional for older
    # pages and clients.
    submission_id = forms.RegexField(EVENT_ID_PATTERN, required=False, widget=forms.HiddenInput,
                                     error_messages={"invalid": "Not a submission id."})
    next = next_field("recommendations")


class ControlForm(StrictForm):
    """"Remove my rating", "not interested" and its undo: nothing to fill in but where to go
    afterwards ("hidden": the page listing the products the shopper hid)."""

    next = next_field("recommendations", "product", "hidden")


class CatalogQueryForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, strip=True)
    category = forms.CharField(required=False, max_length=200)
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)


class ReviewPageForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1, max_value=1000)


class ListPageForm(forms.Form):
    """A page of a shopper's own list (the products they hid)."""

    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)


ONBOARDING_PREFIX = "rate_"
MAX_ONBOARDING_PICKS = 60


class OnboardingForm(StrictForm):
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
                error_messages={"invalid_choice": STARS_ERROR})

    unknown_message = "Unknown or too many fields."

    def clean(self):
        cleaned = super().clean()  # StrictForm: unknown fields
        if getattr(self, "_too_many", False):
            raise forms.ValidationError(self.unknown_message)
        for name in self.fields:
            try:
                product_id_validator(name[len(ONBOARDING_PREFIX):])
            except forms.ValidationError:
                raise forms.ValidationError("Not a product id.") from None
        if not self.picks():
            raise forms.ValidationError("Rate at least one product, or skip this step.")
        return cleaned

    def picks(self) -> dict[str, int]:
        """{product id: stars} of the products the user rated."""
        return {name[len(ONBOARDING_PREFIX):]: value for name, value in (self.cleaned_data or {}).items()
                if name.startswith(ONBOARDING_PREFIX) and value}
