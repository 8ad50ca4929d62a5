from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .selectors import access_review


@login_required
@require_GET
def access(request):
    """Who has access to what, per connection and per user, for Admins (whoever may see users or change
    connections). Shows only the connections the reader may see themselves."""
    if not (request.user.has_perm("auth.view_user") or request.user.has_perm("batches.change_connection")):
        raise PermissionDenied
    by_connection, by_user, teams_exist = access_review(viewer=request.user)
    return render(request, "teams/access.html", {"by_connection": by_connection, "by_user": by_user,
                                                 "teams_exist": teams_exist})
