"""Staff views of users' ratings and their processing, model versions and pipeline runs."""
from __future__ import annotations

from django.contrib import admin

from core import mongo
from shop.models import ModelVersion, PipelineRun, RatingSubmission
from shop.sync import sync_pipeline_records


class MirroredFromMongoAdmin(admin.ModelAdmin):
    """Refreshes the mirror from MongoDB when staff open the list.

    Runs started by Airflow write only to MongoDB (the Airflow venv has no Django), so the list
    syncs itself instead of waiting for someone to run ``manage.py sync_pipeline_records``. Both
    collections hold one small document per job run or model version.
    """

    def changelist_view(self, request, extra_context=None):
        try:
            sync_pipeline_records()
        except Exception as exc:  # MongoDB down: show the last mirrored rows rather than an error page
            self.message_user(request, f"Could not refresh from MongoDB ({exc.__class__.__name__}); "
                                       "showing the last copy.", level="warning")
        return super().changelist_view(request, extra_context)


@admin.register(RatingSubmission)
class RatingSubmissionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "product_id", "action", "rating", "published", "processing_state")
    list_filter = ("published", "action", "rating")
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
class PipelineRunAdmin(MirroredFromMongoAdmin):
    list_display = ("run_id", "job", "status", "balanced", "recorded_at")
    list_filter = ("job", "status", "balanced")
    search_fields = ("run_id",)
    readonly_fields = [f.name for f in PipelineRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(MirroredFromMongoAdmin):
    list_display = ("version", "engine", "published", "published_at", "ndcg_at_10", "popularity_ndcg_at_10")
    list_filter = ("published", "engine")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    @admin.display(description="NDCG@10")
    def ndcg_at_10(self, obj: ModelVersion):
        return (obj.metrics.get("test") or {}).get("ndcg@10")

    @admin.display(description="popularity NDCG@10")
    def popularity_ndcg_at_10(self, obj: ModelVersion):
        return ((obj.metrics.get("baselines") or {}).get("popularity") or {}).get("ndcg@10")
