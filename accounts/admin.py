from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, Permission, User

from batches import audit, selectors

from . import identities, sessions
from .models import BreakGlass, LoginThrottle, OIDCIdentity

@admin.register(LoginThrottle)
class LoginThrottleAdmin(admin.ModelAdmin):
    """Who is being refused right now. Deleting a row lifts its refusal."""

    list_display = ("username", "ip", "failures", "window_ends", "retry_at")
    search_fields = ("username", "ip")
    ordering = ("-window_ends",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _SuperusersOnly(admin.ModelAdmin):
    """Who may log in how: only superusers see or change it."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    has_view_permission = has_delete_permission = lambda self, request, obj=None: self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OIDCIdentity)
class OIDCIdentityAdmin(_SuperusersOnly):
    """Links made by a first log-in or by `manage.py link_oidc` (which is how one is added). Deleting one unlinks."""

    list_display = ("user", "issuer", "subject", "linked_by", "linked_at", "last_login_at")
    search_fields = ("user__username", "subject")

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        identities.unlink(user=obj.user, issuer=obj.issuer, subject=obj.subject, by=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(BreakGlass)
class BreakGlassAdmin(_SuperusersOnly):
    """Superusers who may log in with a password when LOCAL_LOGIN=0 (also `manage.py break_glass`). Audited."""

    list_display = ("user", "marked_by", "marked_at")
    fields = ("user",)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = User.objects.filter(is_superuser=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        identities.mark_break_glass(user=obj.user, on=True, by=request.user.get_username())

    def delete_model(self, request, obj):
        identities.mark_break_glass(user=obj.user, on=False, by=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(auth_admin.UserAdmin):
    """Admins give roles (groups); only superusers grant superuser status or single permissions, and only
    they change, delete or log out a superuser."""

    actions = ["logout_everywhere"]

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if request.user.is_superuser else [*fields, "is_superuser", "user_permissions"]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _may_touch(request.user, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _may_touch(request.user, obj)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if change and (changes := _role_changes(form)):
            audit.record("role_changed", actor=request.user, request=request, target=form.instance.get_username(),
                         detail="; ".join(changes))

    @admin.action(description="Log out everywhere (end every session)", permissions=["change"])
    def logout_everywhere(self, request, queryset):
        users = [user for user in queryset if _may_touch(request.user, user)]
        for user in users:
            sessions.logout_everywhere(user, by=request.user)
        skipped = (f" Skipped {len(queryset) - len(users)} beyond your access." if len(users) < len(queryset)
                   else "")
        self.message_user(request, f"Logged {len(users)} user(s) out everywhere.{skipped}")


def _may_touch(actor, user) -> bool:
    """Only superusers touch superusers; an Admin touches only users whose team access is within their own
    (or a team-scoped Admin could reset another team's user's password and log in as them)."""
    if user is None or actor.is_superuser:
        return True
    return not user.is_superuser and selectors.scope(user).within(selectors.scope(actor))


def _role_changes(form) -> list[str]:
    """What the user change form changed of someone's access, e.g. ["is_staff on", "groups +Operator -Viewer"]."""
    changes = []
    for name in ("is_active", "is_staff", "is_superuser", "groups", "user_permissions"):
        if name not in form.changed_data:
            continue
        value = form.cleaned_data[name]
        if isinstance(value, bool):
            changes.append(f"{name} {'on' if value else 'off'}")
            continue
        before, after = set(form.initial.get(name) or ()), set(value)
        changes.append(" ".join([name, *(f"+{_label(x)}" for x in after - before),
                                 *(f"-{_label(x)}" for x in before - after)]))
    return changes


def _label(role: Group | Permission) -> str:
    return role.name if isinstance(role, Group) else f"{role.content_type.app_label}.{role.codename}"
