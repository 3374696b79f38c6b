"""Staff views of users' ratings and their processing, model versions and pipeline runs."""
from __future__ import annotations

from django.contrib import admin

from core import mongo
from shop.models import ModelVersion, PipelineRun, RatingSubmission


@admin.register(RatingSubmission)
class RatingSubmissionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "product_id", "rating", "published", "processing_state")
    list_filter = ("published", "rating")
    search_fields = ("user__username", "product_id", "event_id", "recommender_id")
    readonly_fields = [f.name for f in RatingSubmission._meta.fields] + ["processing_state"]

    @admin.display(description="worker state")
    def processing_state(self, obj: RatingSubmission) -> str:
        """Read live from MongoDB: 'processed' once a worker has written the recommendations."""
        try:
            doc = mongo.get_rating(obj.event_id)
        except Exception as exc:  # the admin must stay usable while MongoDB is down
            return f"unknown ({exc.__class__.__name__})"
        if not doc:
            return "not yet stored" if obj.published else "never published"
        return f"{doc.get('state')} (model {doc.get('model_version') or '-'})"


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = ("run_id", "job", "status", "balanced", "recorded_at")
    list_filter = ("job", "status", "balanced")
    search_fields = ("run_id",)
    readonly_fields = [f.name for f in PipelineRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "engine", "published", "published_at", "ndcg_at_10", "popularity_ndcg_at_10")
    list_filter = ("published", "engine")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    @admin.display(description="NDCG@10")
    def ndcg_at_10(self, obj: ModelVersion):
        return (obj.metrics.get("test") or {}).get("ndcg@10")

    @admin.display(description="popularity NDCG@10")
    def popularity_ndcg_at_10(self, obj: ModelVersion):
        return ((obj.metrics.get("baselines") or {}).get("popularity") or {}).get("ndcg@10")
