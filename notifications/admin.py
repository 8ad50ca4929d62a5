from django.contrib import admin

from batches.models import Connection
from batches.selectors import visible_connection_ids

from .models import Channel, Delivery, Event


def manageable_channels(channels, user):
    """The channels whose connections the user all sees, as /alerts/ decides (a channel of every connection:
    only for a user who sees every connection)."""
    ids = visible_connection_ids(user)
    if ids is None:
        return channels
    return (channels.filter(connections__isnull=False)
            .exclude(connections__in=Connection.objects.exclude(pk__in=ids)).distinct())


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    """Read-only: channels are managed on their own pages (/alerts/), where targets are checked and teams scope
    who manages which channel."""

    list_display = ["name", "kind", "enabled", "created"]
    fields = ["name", "kind", "events", "connections", "metadata_match", "quiet_start", "quiet_end",
              "quiet_time_zone", "min_interval_seconds", "enabled"]

    def get_queryset(self, request):
        return manageable_channels(super().get_queryset(request), request.user)

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

    def get_queryset(self, request):
        events, ids = super().get_queryset(request), visible_connection_ids(request.user)
        return events if ids is None else events.filter(connection__in=ids)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created", "channel", "event", "state", "response_code", "attempts"]
    list_filter = ["state"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def get_queryset(self, request):
        deliveries, ids = super().get_queryset(request), visible_connection_ids(request.user)
        if ids is None:
            return deliveries
        return deliveries.filter(event__connection__in=ids,
                                 channel__in=manageable_channels(Channel.objects.all(), request.user))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
