"""Staff views of users' ratings and their processing, model versions and pipeline runs.

Pipeline runs and model versions are records of what the batch side did: staff read them and
never add, edit or delete them. The one thing staff may do is make an earlier model version
current again (a rollback), through the same publish function the pipeline's publish job runs.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import IntegrityError, transaction
from django.utils.html import format_html, format_html_join

from accounts import deletion
from accounts.forms import SiteUserChangeForm, SiteUserCreationForm, lost_race
from accounts.models import recommender_id
from core import catalog, mongo, published, rating_history, stored_lists
from shop.models import ModelVersion, PipelineRun, RatingSubmission
from shop.sync import sync_pipeline_records

log = logging.getLogger(__name__)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may look, not add, change or delete: records of what happened (the pipeline's runs and
    model versions, account deletions)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MirroredFromMongoAdmin(ReadOnlyAdmin):
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
    search_fields = ("user__username", "product_id", "event_id", "idempotency_key", "recommender_id")
    readonly_fields = [f.name for f in RatingSubmission._meta.fields] + ["processing_state"]

    def has_add_permission(self, request) -> bool:
        """No add form: a submission records what the site published, every field is read-only, so
        the form could only be saved empty (an IntegrityError). Not ``ReadOnlyAdmin``: deleting a
        user in the admin deletes their submissions too, which needs the delete permission here."""
        return False

    @admin.display(description="worker state")
    def processing_state(self, obj: RatingSubmission) -> str:
        """Read live from MongoDB: 'processed' once a worker has written the recommendations."""
        try:
            doc = rating_history.get_rating(obj.event_id)
        except Exception as exc:  # the admin must stay usable while MongoDB is down
            return f"unknown ({exc.__class__.__name__})"
        if not doc:
            return "not yet stored" if obj.published else "never published"
        return f"{doc.get('state')} (model {doc.get('model_version') or '-'})"


@admin.register(PipelineRun)
class PipelineRunAdmin(MirroredFromMongoAdmin):  # read-only: no "add pipeline run", no edits
    list_display = ("run_id", "job", "status", "balanced", "recorded_at")
    list_filter = ("job", "status", "balanced")
    search_fields = ("run_id",)
    readonly_fields = [f.name for f in PipelineRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(MirroredFromMongoAdmin):
    list_display = ("version", "is_current", "engine", "published", "published_at", "pruned_at", "ndcg_at_10",
                    "recall_at_10", "coverage", "popularity_ndcg_at_10", "validation_ndcg_at_10")
    list_filter = ("published", "engine", ("pruned_at", admin.EmptyFieldListFilter))
    readonly_fields = [f.name for f in ModelVersion._meta.fields] + ["is_current", "made_current"]
    actions = ["make_current"]

    def _test(self, obj: ModelVersion, metric: str):
        return (obj.metrics.get("test") or {}).get(metric)

    @admin.display(description="current", boolean=True)
    def is_current(self, obj: ModelVersion) -> bool:
        """Read through ``core.published``, as the site's other readers: once a second for the whole
        list, the last known version while the store is unreachable, a 503 if never read."""
        return obj.version == published.current_version()

    @admin.display(description="NDCG@10")
    def ndcg_at_10(self, obj: ModelVersion):
        return self._test(obj, "ndcg@10")

    @admin.display(description="Recall@10")
    def recall_at_10(self, obj: ModelVersion):
        return self._test(obj, "recall@10")

    @admin.display(description="coverage")
    def coverage(self, obj: ModelVersion):
        return self._test(obj, "coverage")

    @admin.display(description="popularity NDCG@10")
    def popularity_ndcg_at_10(self, obj: ModelVersion):
        return ((obj.metrics.get("baselines") or {}).get("popularity") or {}).get("ndcg@10")

    @admin.display(description="validation NDCG@10")
    def validation_ndcg_at_10(self, obj: ModelVersion):
        return (obj.metrics.get("validation") or {}).get("ndcg@10")

    @admin.display(description="made current by staff")
    def made_current(self, obj: ModelVersion) -> str:
        """From the version's MongoDB record, where the rollback action writes who and when."""
        doc = mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": obj.version}) or {}
        if not doc.get("made_current_by"):
            return "-"
        when = dt.datetime.fromtimestamp(float(doc["made_current_at"]), tz=dt.timezone.utc)
        return f"{doc['made_current_by']} at {when:%Y-%m-%d %H:%M:%S} UTC (run {doc.get('made_current_run')})"

    def has_publish_permission(self, request) -> bool:
        """Rolling the served model back is for superusers and staff granted "change model version"."""
        return request.user.is_superuser or request.user.has_perm("shop.change_modelversion")

    @admin.action(description="Make the selected version current (rollback through the publish job)",
                  permissions=["publish"])
    def make_current(self, request, queryset) -> None:
        """Publish one chosen version with ``spark_jobs.publish.publish`` (forced: staff decided).

        The same function the pipeline's publish job runs: the version's lists are loaded into
        MongoDB, ``CURRENT`` is swapped (the workers reload, Celery re-scores). Who did it
        and when goes into the admin log, the version's MongoDB record and a pipeline-run record.
        """
        from core import locking
        from core.runs import fs_safe
        from spark_jobs.common import BATCH_LEASE_S, BATCH_LOCK, batch_holder, job_records
        from spark_jobs.publish import VersionGone, publish

        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to make current.", level=messages.ERROR)
            return
        obj = queryset.get()
        now = time.time()
        run_id = fs_safe(f"admin-{int(now)}-{request.user.get_username()}")  # the id its records get
        # the batch lock, as the publish job holds it: a pipeline's publish or train beside this one
        # would drop this version's lists or delete its folder (spark_jobs/common.batch_lock). Held
        # in this web process, so a lease lost is logged, not the process ended, and waited for briefly.
        lease = locking.lease(BATCH_LOCK, batch_holder("make current (admin)", run_id), BATCH_LEASE_S,
                              wait_s=5.0, poll_s=0.5, on_lost=log.warning)
        try:  # the publish job's records too: "started", then the outcome or the failure and why
            with job_records("publish", run_id, {"version": obj.version, "force": True,
                                                 "requested_by": request.user.get_username()},
                             failures=(Exception,), lock=lease) as job:
                job.record = publish(obj.version, force=True)
        except locking.LockHeld as exc:
            self.message_user(request, f"Could not make {obj.version} current: a batch job is running ({exc}); "
                                       f"try again once it has finished.", level=messages.ERROR)
            return
        if isinstance(job.error, VersionGone):  # pruned: the list may show it (kept for its metrics), files gone
            self.message_user(request, f"Could not make {obj.version} current: {job.error}.", level=messages.ERROR)
            return
        if job.error is not None:  # missing artifacts, MongoDB down: say so, change nothing here
            self.message_user(request, f"Could not make {obj.version} current: "
                                       f"{job.error.__class__.__name__}: {job.error}", level=messages.ERROR)
            return
        record = job.record
        if record["status"] == "published":
            mongo.record_model_version(obj.version, {"made_current_by": request.user.get_username(),
                                                     "made_current_at": now, "made_current_run": run_id})
        message = (f"Made current by {request.user.get_username()} (run {run_id}): {record['status']}, "
                   f"replacing {record.get('replaced') or '-'}; {record.get('decision', '')}")
        self.log_change(request, obj, message)
        sync_pipeline_records()
        self.message_user(request, f"{obj.version}: {message}", level=messages.SUCCESS)


User = get_user_model()
admin.site.unregister(User)
RATINGS_SHOWN = 100  # newest ratings on a user's page (the admin's own list_per_page): one row each


@admin.register(User)
class RecommenderUserAdmin(UserAdmin):
    """Django's user admin plus what the recommender holds for the user, read live from MongoDB; an
    e-mail address another account has is refused on the form (``SiteUserChangeForm``), a save that
    lost the race for one, or for a username, as well (:meth:`changeform_view`)."""

    form = SiteUserChangeForm
    add_form = SiteUserCreationForm
    readonly_fields = (*UserAdmin.readonly_fields, "recommender_id", "rated_products", "current_list")
    fieldsets = (*UserAdmin.fieldsets,
                 ("Recommender (live from MongoDB)", {"fields": ("recommender_id", "rated_products", "current_list")}))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """Django's page; a save the username's constraint or the e-mail index refused (another save
        or sign-up took the name or the address after this form's check) is shown again with the
        form's error, where it was a server error. The refused save's transaction is rolled back
        whole (Django's own around the page), then the page is made once more with a form that knows
        which is taken (``SiteUserChangeForm``, ``SiteUserCreationForm``): the admin has no other way
        back to its form once saving. Each field's race is taken back once; any other error stays."""
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except IntegrityError as exc:
            race, lost = lost_race(exc), getattr(request, "lost_races", frozenset())
            if race is None or race in lost:
                raise
            request.lost_races = lost | {race}
            return self.changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        lost = getattr(request, "lost_races", frozenset())
        if lost:
            form = type(form.__name__, (form,), {f"lost_{race}_race": True for race in lost})
        return form

    def delete_model(self, request, obj) -> None:
        """The shopper's own deletion (accounts.deletion), with its staff record, not only the Django
        rows: staff answer "delete me" requests here, and the rows alone left the shopper's ratings,
        history and list in MongoDB under an id nobody owned, for training to go on learning from."""
        deletion.delete_account(obj)

    def log_deletions(self, request, queryset) -> None:
        """Nothing here for "delete selected", which calls this for every user selected before any
        is deleted: :meth:`delete_queryset` logs each as its deletion is done. The delete page's
        one user is logged here, in the page's transaction with the deletion."""
        if request.POST.get("action") == "delete_selected":
            return
        super().log_deletions(request, queryset)

    def delete_queryset(self, request, queryset) -> None:
        """The list's "delete selected": each one as :meth:`delete_model`, logged with its deletion
        (one transaction). An error (MongoDB down) stops the action with the users before it deleted
        and logged, none after; "delete selected" had logged them all, and half-deleted them."""
        for user in queryset:
            with transaction.atomic():
                super().log_deletions(request, [user])
                deletion.delete_account(user)

    @admin.display(description="recommender id")
    def recommender_id(self, obj) -> str:
        return recommender_id(obj) if obj and obj.pk else "-"

    @admin.display(description="ratings")
    def rated_products(self, obj):
        """The newest ``RATINGS_SHOWN`` ratings, and how many older ones there are: a reviewer of the
        data can have thousands, and the page rendered (and read the product of) every one."""
        if not obj or not obj.pk:
            return "-"
        try:
            rated = rating_history.user_history(recommender_id(obj))
            shown = sorted(rated.items(), key=lambda kv: -kv[1][1])[:RATINGS_SHOWN]
            names = catalog.get_products([pid for pid, _ in shown])
        except Exception as exc:  # the admin stays usable while MongoDB is down
            return f"unavailable ({exc.__class__.__name__})"
        if not rated:
            return "No ratings."
        rows = format_html_join("", "<tr><td>{} <code>{}</code></td><td>{} ★</td><td>{}</td></tr>", (
            ((names.get(pid) or {}).get("title") or "", pid, int(r),
             f"{dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc):%Y-%m-%d %H:%M}")
            for pid, (r, ts) in shown))
        more = len(rated) - len(shown)
        note = format_html('<p class="help recsys-more">{} more, older, not shown ({} ratings in all).</p>',
                           f"{more:,}", f"{len(rated):,}") if more else ""
        return format_html('<table class="recsys-ratings"><tr><th>product</th><th>rating</th><th>when (UTC)</th></tr>'
                           '{}</table>{}', rows, note)

    @admin.display(description="current recommendations")
    def current_list(self, obj):
        if not obj or not obj.pk:
            return "-"
        try:
            doc = stored_lists.get_recommendations(recommender_id(obj))
            items = (doc or {}).get("items") or []
            names = catalog.get_products([i["product_id"] for i in items] + [i["because"] for i in items
                                                                            if i.get("because")])
        except Exception as exc:
            return f"unavailable ({exc.__class__.__name__})"
        if not items:
            return "No list yet (popular products are shown)."

        def title(pid):
            return (names.get(pid) or {}).get("title") or pid

        def reason(item) -> str:
            if item.get("reason"):
                return str(item["reason"])
            return f"because they rated {title(item['because'])}" if item.get("because") else "popular"

        updated = dt.datetime.fromtimestamp(float(doc.get("updated_at") or 0), tz=dt.timezone.utc)
        return format_html(
            '<p>model {} · updated {} UTC · from event {}</p><ol class="recsys-list">{}</ol>',
            doc.get("model_version") or "-", f"{updated:%Y-%m-%d %H:%M:%S}", doc.get("source_event_id") or "batch",
            format_html_join("", "<li>{} <code>{}</code> · score {} · {}</li>", (
                (title(i["product_id"]), i["product_id"], f"{float(i.get('score', 0)):.4f}", reason(i))
                for i in items)))
