"""The site's own records of ratings submitted, and what staff see in the Django admin.

The catalog, ratings and recommendations live in MongoDB (``core.mongo``). Django keeps every
rating or control a site user submitted (``RatingSubmission``: the idempotency store of
``shop.ratings`` and what ``GET /api/ratings/<id>/`` answers from; its processing state is read
live from MongoDB), and mirrors of the batch pipeline's runs and model versions, refreshed by the
``sync_pipeline_records`` command (bin/pipeline runs it after each run) and by the admin's list
pages themselves when staff open them (shop/admin.py; Airflow's runs write only to MongoDB).
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from core.events import CONTROL_ACTIONS, RATE


class RatingSubmission(models.Model):
    """One rating or control a site user submitted: found again by (user, idempotency key) when
    the client retries (``shop.ratings``), looked up by event id or key for its state (the API),
    listed for staff (the admin). ``published``: Kafka acknowledged it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ratings")
    recommender_id = models.CharField(max_length=128, db_index=True)
    product_id = models.CharField(max_length=128, db_index=True)
    rating = models.PositiveSmallIntegerField(help_text="0 for the actions other than rate.")
    action = models.CharField(max_length=32, default="rate", db_index=True,
                              help_text=f"{RATE} or a control: {', '.join(CONTROL_ACTIONS)} "
                                        "(core.events.CONTROL_ACTIONS).")
    text = models.TextField(blank=True)
    event_id = models.CharField(max_length=64, unique=True)
    # Unique per user, not across users: another account's key is no conflict (nor a way to learn
    # which keys exist), and the event id is derived from (user, key) (shop.ratings.keyed_event_id).
    idempotency_key = models.CharField(max_length=64, null=True, blank=True,
                                       help_text="The client's Idempotency-Key or the form's submission id; "
                                                 "empty when the site made the event id.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published = models.BooleanField(default=False, help_text="Kafka acknowledged the event.")
    publish_error = models.CharField(max_length=300, blank=True)
    # Not stored: set by shop.ratings.submit_event when it answered with this earlier accepted
    # submission and published nothing (the API's Idempotent-Replayed header).
    replayed = False

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "idempotency_key"], name="rating_key_unique_per_user")]

    def __str__(self) -> str:
        if self.action != "rate":
            return f"{self.recommender_id} {self.action} {self.product_id}"
        return f"{self.recommender_id} rated {self.product_id} {self.rating}★"


class PipelineRun(models.Model):
    """One batch job of one pipeline run (mirrors MongoDB ``pipeline_runs``)."""

    key = models.CharField(max_length=200, unique=True)
    run_id = models.CharField(max_length=128, db_index=True)
    job = models.CharField(max_length=64)
    status = models.CharField(max_length=32, blank=True)
    balanced = models.BooleanField(null=True)
    counts = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-recorded_at"]

    def __str__(self) -> str:
        return self.key


class ModelVersion(models.Model):
    """A trained model (mirrors MongoDB ``model_versions``), with its metrics and publish state."""

    version = models.CharField(max_length=128, unique=True)
    engine = models.CharField(max_length=64, blank=True)
    published = models.BooleanField(default=False)
    published_at = models.DateTimeField(null=True)
    metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    decision = models.TextField(blank=True)
    pruned_at = models.DateTimeField(null=True, help_text="When publish deleted its files (MODEL_VERSIONS_KEPT); "
                                                          "it cannot be made current since.")

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return self.version
