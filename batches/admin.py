from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.urls import path
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from teams.models import OPERATOR

from . import audit, selectors
from .store import delete_batches
from .models import KEY_DESTINATION, AuditEvent, Batch, BatchSnapshot, BatchTransition, Connection, KeyUnreadable


def _operates(user, connection) -> bool:
    return connection is None or selectors.scope(user).covers(connection.pk, OPERATOR)


class VisibleOnly:
    """In the admin too, a team-scoped Admin sees only their teams' connections (batches/selectors.py)."""

    connection_field = "connection"

    def get_queryset(self, request):
        return selectors.only_visible(super().get_queryset(request), request.user, connection=self.connection_field)


class ConnectionForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https", initial=settings.API_DEFAULT_BASE_URL,
                              help_text="Any OpenAI-compatible base URL, ending in /v1")
    # Write-only: the stored key is never rendered back, not even masked.
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )

    webhook_secret = forms.CharField(
        label="Webhook signing secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The whsec_… secret OpenAI shows when you add a webhook endpoint to the project (see the "
                  "README, \"OpenAI webhooks\"). Stored encrypted. Leave empty to keep the current one.",
    )
    forget_webhook_secret = forms.BooleanField(label="Remove the webhook secret (refuse webhooks)", required=False)

    class Meta:
        model = Connection
        fields = ["name", "slug", "base_url", "api_key", "organization", "project", "enabled", "poll_interval",
                  "webhook_secret", "forget_webhook_secret"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.api_key_encrypted:
            try:
                self.instance.api_key
            except KeyUnreadable as exc:  # encrypted with a key no longer in BATCHBOARD_ENCRYPTION_KEYS
                self.fields["api_key"].help_text = f"{exc}. Until then no sync, cancel or download works."

    def clean_api_key(self):
        key = self.cleaned_data["api_key"]
        if not key and not self.instance.api_key_encrypted:
            raise forms.ValidationError("A new connection needs an API key.")
        return key

    def clean_webhook_secret(self):
        secret = self.cleaned_data["webhook_secret"]
        if secret:
            try:
                usable = secret.startswith("whsec_") and Webhook(secret)
            except (ValueError, EmptyWebhookSecretError):
                usable = False
            if not usable:
                raise forms.ValidationError("A webhook signing secret starts with whsec_ followed by base64.")
        return secret

    def clean(self):
        data = super().clean()
        # The stored key was entered for one place: it never follows a change of where it is sent.
        moved = [Connection._meta.get_field(name).verbose_name
                 for name in KEY_DESTINATION if name in self.changed_data]
        if self.instance.pk and moved and not data.get("api_key"):
            self.add_error("api_key", f"Enter the API key again to change where it is sent ({', '.join(moved)} "
                                      "changed); the stored key is not sent anywhere else.")
        return data

    def save(self, commit=True):
        if self.cleaned_data.get("api_key"):
            self.instance.set_api_key(self.cleaned_data["api_key"])
        if self.cleaned_data.get("webhook_secret"):
            self.instance.set_webhook_secret(self.cleaned_data["webhook_secret"])
        elif self.cleaned_data.get("forget_webhook_secret"):
            self.instance.set_webhook_secret("")
        return super().save(commit)


@admin.register(Connection)
class ConnectionAdmin(VisibleOnly, admin.ModelAdmin):
    connection_field = "pk"
    form = ConnectionForm

    # Changing or deleting a connection takes an operator's reach on it (a viewer grant only reads it).
    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _operates(request.user, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _operates(request.user, obj)
    list_display = ["name", "slug", "base_url", "api_key_hint", "enabled", "last_success_at", "consecutive_failures"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = [
        "api_key_hint",
        "webhooks",
        "last_attempt_at",
        "last_success_at",
        "last_error",
        "consecutive_failures",
        "warning",
        "next_sync_at",
        "last_full_walk_at",
    ]

    def get_fields(self, request, obj=None):
        return ConnectionForm.Meta.fields + (self.readonly_fields if obj else [])

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit.connection_saved(obj, created=not change, changed=form.changed_data, actor=request.user,
                               request=request)

    def delete_model(self, request, obj):
        audit.connection_deleted(obj, actor=request.user, request=request)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for connection in queryset:
            audit.connection_deleted(connection, actor=request.user, request=request)
        super().delete_queryset(request, queryset)

    @admin.display(description="API key")
    def api_key_hint(self, obj):
        return obj.api_key_hint

    @admin.display(description="Webhooks")
    def webhooks(self, obj):
        if not obj.webhook_secret_encrypted:
            return "off: no signing secret"
        return f"on: POST /webhooks/openai/{obj.slug}/ (behind your public HTTPS address)"


class SnapshotInline(admin.TabularInline):
    model = BatchSnapshot
    extra = 0
    can_delete = False
    fields = ["version", "observed_at", "status", "total_requests", "completed_requests", "failed_requests"]
    readonly_fields = fields
    ordering = ["-version"]
    max_num = 0


@admin.register(Batch)
class BatchAdmin(VisibleOnly, admin.ModelAdmin):
    list_display = ["batch_id", "connection", "status", "endpoint", "model", "created_at", "total_requests"]
    list_filter = ["status", ("connection", admin.RelatedOnlyFieldListFilter), "endpoint"]
    search_fields = ["batch_id", "input_file_id", "output_file_id", "error_file_id"]
    list_select_related = ["connection"]
    inlines = [SnapshotInline]

    def has_add_permission(self, request):
        return False  # batches come from the API only

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Batch._meta.fields]

    # Deleting goes through the store, which keeps the status counts in step.
    def delete_model(self, request, obj):
        delete_batches(Batch.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        delete_batches(queryset)


@admin.register(BatchSnapshot)
class BatchSnapshotAdmin(VisibleOnly, admin.ModelAdmin):
    connection_field = "batch__connection"
    list_display = ["batch", "version", "observed_at", "status", "completed_requests", "failed_requests"]
    list_select_related = ["batch"]
    raw_id_fields = ["batch"]

    def has_add_permission(self, request):
        return False


@admin.register(BatchTransition)
class BatchTransitionAdmin(VisibleOnly, admin.ModelAdmin):
    connection_field = "batch__connection"
    list_display = ["batch", "status", "at", "observed_at"]
    list_select_related = ["batch"]
    raw_id_fields = ["batch"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: an audit trail is not edited. Exported as CSV."""

    list_display = ["created", "username", "action", "ok", "target", "batch_id_text", "detail", "ip", "request_id"]
    list_filter = ["action", "ok"]
    search_fields = ["batch_id_text", "username", "target", "ip", "request_id"]
    raw_id_fields = ["batch", "user", "connection"]

    def get_queryset(self, request):
        return selectors.visible_audit_events(request.user, super().get_queryset(request))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        export = path("export.csv", self.admin_site.admin_view(self.export_csv), name="batches_auditevent_export")
        return [export, *super().get_urls()]

    def export_csv(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        events = self.get_queryset(request)  # as the list shows them: scoped to the reader's connections
        response = StreamingHttpResponse(audit.csv_lines(events), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="batchboard-audit.csv"'
        return response
