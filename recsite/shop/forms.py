"""Forms for every input the site takes; each field is typed and bounded so hostile input gets a 400."""
from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from core.events import MAX_TEXT_CHARS

product_id_validator = RegexValidator(r"^[A-Za-z0-9_.:@-]{1,128}$", "Not a product id.")


class RatingForm(forms.Form):
    rating = forms.TypedChoiceField(choices=[(i, f"{i} ★") for i in range(5, 0, -1)], coerce=int,
                                    widget=forms.RadioSelect)
    text = forms.CharField(required=False, max_length=MAX_TEXT_CHARS, strip=True,
                           widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Optional review"}))


class CatalogQueryForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, strip=True)
    category = forms.CharField(required=False, max_length=200)
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)
