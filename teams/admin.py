from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from batches import selectors

from . import services
from .models import CEILINGS, ProviderMembership, Team, TeamGrant


def _manageable(request, team) -> bool:
    return team is None or services.may_manage(request.user, team)


class _TeamPart(admin.TabularInline):
    """A grant or a membership: changed only within the teams the user may manage, never edited in place
    (remove it and add another), each saved through teams/services.py (checked and audited)."""

    extra = 0

    def has_add_permission(self, request, obj):
        return super().has_add_permission(request, obj) and _manageable(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _manageable(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _manageable(request, obj)


class GrantForm(forms.ModelForm):
    granter = None  # the user saving the form; set per request in GrantInline.get_formset
    # No default: a row whose role is chosen counts as filled in, even with "All connections" left as it is.
    role = forms.ChoiceField(label="up to", choices=[("", "---------"), *CEILINGS],
                             help_text=TeamGrant._meta.get_field("role").help_text)

    class Meta:
        model = TeamGrant
        fields = ["connection", "role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connection"].empty_label = "All connections"
        self.fields["connection"].disabled = bool(self.instance.pk)

    def clean(self):
        data = super().clean()
        if "connection" in data and data.get("role") and not services.may_grant(
                self.granter, connection=data["connection"], role=data["role"]):
            raise ValidationError("You cannot grant more than you may use yourself: this connection, at this role, "
                                  "is beyond your own access.")
        return data


class GrantInline(_TeamPart):
    model = TeamGrant
    form = GrantForm
    verbose_name, verbose_name_plural = "grant", "grants (a member may do what their role allows, up to this)"

    def get_formset(self, request, obj=None, **kwargs):
        kwargs["form"] = type("GrantForm", (GrantForm,), {"granter": request.user})
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connection":
            kwargs["queryset"] = selectors.visible_connections(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class MemberForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].disabled = bool(self.instance.pk)


class MemberInline(_TeamPart):
    model = Team.members.through
    form = MemberForm
    readonly_fields = ["source"]
    verbose_name, verbose_name_plural = "member", "members"

    @admin.display(description="added")
    def source(self, membership):
        if not membership.pk:
            return ""
        mark = ProviderMembership.objects.filter(team_id=membership.team_id, user_id=membership.user_id).first()
        return f"by single sign-on (provider group {mark.group})" if mark else "manual"


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    fieldsets = [(None, {"fields": ["name"], "description": (
        "Once one team exists, a user sees only the connections granted to their teams (superusers still see "
        "everything); users in no team see none. Who has access to what: the Access page (/access/).")})]
    inlines = [GrantInline, MemberInline]
    list_display = ["name", "granted", "member_count", "created"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("grants__connection", "members")

    @admin.display(description="grants")
    def granted(self, team):
        return ", ".join(f"{g.connection or 'all connections'} ({g.role})" for g in team.grants.all()) or "—"

    @admin.display(description="members")
    def member_count(self, team):
        return len(team.members.all())

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _manageable(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _manageable(request, obj)

    def save_formset(self, request, form, formset, change):
        team, changed = form.instance, formset.save(commit=False)
        if formset.model is TeamGrant:
            for grant in formset.deleted_objects:
                services.revoke_access(team=team, connection=grant.connection, by=request.user)
            for grant in changed:
                services.grant_access(team=team, connection=grant.connection, role=grant.role, by=request.user)
        else:
            for membership in formset.deleted_objects:
                services.remove_member(team=team, user=membership.user, by=request.user)
            for membership in changed:
                services.add_member(team=team, user=membership.user, by=request.user)

    def delete_model(self, request, obj):
        services.delete_team(team=obj, by=request.user)

    def delete_queryset(self, request, queryset):
        for team in queryset:
            services.delete_team(team=team, by=request.user)
