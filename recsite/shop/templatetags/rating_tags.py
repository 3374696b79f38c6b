"""``{% submission_id %}``: a fresh idempotency key for each rating form a page renders."""
from __future__ import annotations

import uuid

from django import template
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def submission_id() -> str:
    """The hidden input carrying the key; a resubmission of this page sends it again (shop.ratings)."""
    return format_html('<input type="hidden" name="submission_id" value="{}">', uuid.uuid4().hex)
