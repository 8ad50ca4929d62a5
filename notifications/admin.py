from django.contrib import admin

from .models import Channel, Delivery, Event


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    """Read-only: channels are managed on their own pages (/alerts/), where targets are checked and teams scope
    who manages which channel."""

    list_display = ["name", "kind", "enabled", "created"]
    fields = ["name", "kind", "events", "connections", "metadata_match", "quiet_start", "quiet_end",
              "quiet_time_zone", "min_interval_seconds", "enabled"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "connection", "dedupe_key", "processed"]
    list_filter = ["kind"]
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created", "channel", "event", "state", "response_code", "attempts"]
    list_filter = ["state", "channel"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
