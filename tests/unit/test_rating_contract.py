"""The HTML form, the API serializer and the event contract agree on what a rating is.

core.events is the one definition; the form and the serializer build their fields from it, so
each value below gets the same verdict from all three.
"""
from __future__ import annotations

import pytest

from core import events

pytestmark = pytest.mark.django_db(databases=[])  # forms and serializers only: no database


def _event_ok(**fields) -> bool:
    data = events.RatingEvent(user_id="u1", **{"product_id": "B00X", "rating": 5, **fields}).to_dict()
    try:
        events.validate(data)
    except events.InvalidEvent:
        return False
    return True


@pytest.mark.parametrize("stars", [-1, 0, 1, 3, 5, 6, 10])
def test_stars_range(stars):
    from shop.forms import RatingForm
    from shop.serializers import RatingIn

    want = _event_ok(rating=stars)
    assert want == (events.MIN_STARS <= stars <= events.MAX_STARS)
    assert RatingForm({"rating": str(stars)}).is_valid() == want
    assert RatingIn(data={"product_id": "B00X", "rating": stars}).is_valid() == want


@pytest.mark.parametrize("product_id", ["B00X", "a.b:c@d-e_f", "x" * 128, "x" * 129, "", "id\n", "a b", "é", "a/b"])
def test_product_id_pattern(product_id):
    from django.core.exceptions import ValidationError

    from shop.forms import product_id_validator
    from shop.serializers import ProductIn, RatingIn

    want = _event_ok(product_id=product_id)
    assert events.is_product_id(product_id) == want
    try:
        product_id_validator(product_id)
        form_ok = True
    except ValidationError:
        form_ok = False
    assert form_ok == want
    assert RatingIn(data={"product_id": product_id, "rating": 4}).is_valid() == want
    assert ProductIn(data={"product_id": product_id}).is_valid() == want


@pytest.mark.parametrize("key", ["abcd1234", "a" * 64, "a" * 65, "short", "with space1", "key\n12345"])
def test_submission_id_and_idempotency_key_are_event_ids(key):
    from shop.forms import RatingForm
    from shop.serializers import RatingIn

    want = _event_ok(event_id=key)
    assert events.is_event_id(key) == want
    assert RatingForm({"rating": "4", "submission_id": key}).is_valid() == want
    assert RatingIn(data={"product_id": "B00X", "rating": 4, "idempotency_key": key}).is_valid() == want


def test_text_length_and_control_actions():
    from shop.forms import RatingForm
    from shop.serializers import ControlOut, RatingIn

    at, over = "x" * events.MAX_TEXT_CHARS, "x" * (events.MAX_TEXT_CHARS + 1)
    assert _event_ok(text=at) and not _event_ok(text=over)
    assert RatingForm({"rating": "4", "text": at}).is_valid() and not RatingForm({"rating": "4", "text": over}).is_valid()
    assert RatingIn(data={"product_id": "B00X", "rating": 4, "text": at}).is_valid()
    assert not RatingIn(data={"product_id": "B00X", "rating": 4, "text": over}).is_valid()
    assert tuple(ControlOut().fields["action"].choices) == events.CONTROL_ACTIONS


def test_a_submission_s_help_text_names_every_action_it_records():
    """The admin's help for RatingSubmission.action: it named three actions of four once
    ``interested_again`` was added; it is built from core.events now."""
    import re

    from shop.models import RatingSubmission

    named = set(re.findall(r"[a-z_]+", str(RatingSubmission._meta.get_field("action").help_text)))
    assert {events.RATE, *events.CONTROL_ACTIONS} <= named


def test_the_migrations_hold_every_model_change():
    """What ``manage.py makemigrations --check`` says, without a database: a new action in
    core.events changes a help text above, and this fails until its migration is made."""
    from django.apps import apps
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
    from django.db.migrations.state import ProjectState

    loader = MigrationLoader(None, ignore_no_migrations=True)
    detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps),
                                     NonInteractiveMigrationQuestioner(dry_run=True))
    assert detector.changes(graph=loader.graph) == {}
