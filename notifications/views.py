"""Channel pages, for whoever may change channels (the Admin group): list, add, edit with the delivery log,
send a test, delete. With teams, a user manages only channels whose connections they all see (a channel for
every connection: only if they see every connection)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from batches import selectors

from .forms import ChannelForm
from .models import DEFAULT_KINDS, Channel
from .outbox import send_test

LOG_SIZE = 50


def _require_manager(request) -> tuple[list[int] | None, object]:
    """403 without `notifications.change_channel`; returns the ids of the connections the user sees (None: all)
    and those connections."""
    if not request.user.has_perm("notifications.change_channel"):
        raise PermissionDenied
    return selectors.visible_connection_ids(request.user), selectors.visible_connections(request.user)


def _manageable(channels, visible_ids: list[int] | None) -> list[Channel]:
    if visible_ids is None:
        return list(channels)
    return [c for c in channels if (ids := {x.pk for x in c.connections.all()}) and ids <= set(visible_ids)]


def _get_channel_for_user(request, pk: int) -> tuple[Channel, object, bool]:
    """The channel in the URL if this user may manage it (404 otherwise, so channels do not leak)."""
    visible_ids, connections = _require_manager(request)
    found = _manageable(Channel.objects.filter(pk=pk).prefetch_related("connections"), visible_ids)
    if not found:
        raise Http404("No such channel")
    return found[0], connections, visible_ids is None


@login_required
@require_GET
def channel_list(request):
    visible_ids, _ = _require_manager(request)
    channels = _manageable(Channel.objects.prefetch_related("connections"), visible_ids)
    return render(request, "notifications/channels.html", {"channels": channels})


@login_required
@require_http_methods(["GET", "POST"])
def channel_new(request):
    visible_ids, connections = _require_manager(request)
    form = ChannelForm(request.POST or None, connections=connections, sees_all=visible_ids is None,
                       initial={"events": DEFAULT_KINDS})
    if request.method == "POST":
        if form.is_valid():
            channel = form.save()
            messages.success(request, f"Channel {channel.name} added.")
            return redirect("channel-detail", pk=channel.pk)
        return render(request, "notifications/channel_new.html", {"form": form}, status=400)
    return render(request, "notifications/channel_new.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def channel_detail(request, pk: int):
    channel, connections, sees_all = _get_channel_for_user(request, pk)
    form = ChannelForm(request.POST or None, instance=channel, connections=connections, sees_all=sees_all)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            form.save()
            messages.success(request, "Saved.")
            return redirect("channel-detail", pk=channel.pk)
        status = 400
    deliveries = channel.deliveries.select_related("event").order_by("-created")[:LOG_SIZE]
    template = "notifications/channel.html" + ("#delivery-log" if request.htmx else "")
    return render(request, template, {"channel": channel, "form": form, "deliveries": deliveries}, status=status)


@login_required
@require_POST
def channel_test(request, pk: int):
    """Send a test message now; the answer shows the outcome and the status code, never the receiver's body."""
    channel, _, _ = _get_channel_for_user(request, pk)
    delivery = send_test(channel)
    if delivery.state == delivery.SENT:
        code = f" (HTTP {delivery.response_code})" if delivery.response_code else ""
        messages.success(request, f"Test message sent{code}.")
    else:  # the result is our own words, with the status code when there was an answer
        messages.error(request, f"Test message not sent: {delivery.result}.")
    return redirect("channel-detail", pk=channel.pk)


@login_required
@require_POST
def channel_delete(request, pk: int):
    channel, _, _ = _get_channel_for_user(request, pk)
    channel.delete()
    messages.success(request, f"Channel {channel.name} deleted.")
    return redirect("channel-list")
