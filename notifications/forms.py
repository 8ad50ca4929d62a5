import secrets
from base64 import b64encode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.core.validators import validate_email

from .models import EVENT_KINDS, Channel
from .outbound import url_problem
from .transports import TITLES


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + b64encode(secrets.token_bytes(24)).decode()


class ChannelForm(forms.ModelForm):
    """A channel's kind, target and rules. The target is write-only: left empty on an existing channel, it stays."""

    target = forms.CharField(required=False, max_length=2000, widget=forms.TextInput(attrs={"autocomplete": "off"}),
                             help_text="Slack or webhook: an https:// URL. Email: addresses, comma-separated.")
    events = forms.MultipleChoiceField(choices=[(k, f"{k} ({TITLES[k]})") for k in EVENT_KINDS],
                                       widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = Channel
        fields = ["name", "kind", "events", "connections", "metadata_match", "quiet_start", "quiet_end",
                  "quiet_time_zone", "min_interval_seconds", "enabled"]
        widgets = {"connections": forms.CheckboxSelectMultiple, "quiet_start": forms.TimeInput(attrs={"type": "time"}),
                   "quiet_end": forms.TimeInput(attrs={"type": "time"})}

    def __init__(self, *args, connections, sees_all: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connections"].queryset = connections
        self.sees_all = sees_all
        if not sees_all:
            self.fields["connections"].help_text = "Choose at least one (you do not see every connection)."

    def clean_quiet_time_zone(self):
        name = self.cleaned_data["quiet_time_zone"].strip() or "UTC"
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError("Not a time zone name (such as UTC or Europe/Berlin).") from None
        return name

    def clean_metadata_match(self):
        value = self.cleaned_data["metadata_match"].strip()
        for part in filter(None, (p.strip() for p in value.split(","))):
            if "=" not in part or not part.partition("=")[0].strip():
                raise forms.ValidationError("Write key=value pairs, comma-separated (team=growth).")
        return value

    def clean(self):
        cleaned = super().clean()
        kind, target = cleaned.get("kind"), (cleaned.get("target") or "").strip()
        if not target and self.instance.pk is None:
            self.add_error("target", "This field is required.")
        elif target and kind == Channel.EMAIL:
            for address in filter(None, (a.strip() for a in target.split(","))):
                try:
                    validate_email(address)
                except forms.ValidationError:
                    self.add_error("target", f"{address} is not an email address.")
        elif target and kind in (Channel.SLACK, Channel.WEBHOOK) and (problem := url_problem(target)):
            self.add_error("target", problem)
        if self.instance.pk and kind and kind != self.instance.kind and not target:
            self.add_error("target", "A new kind needs its target entered again.")
        if not self.sees_all and not cleaned.get("connections"):
            self.add_error("connections", "Choose at least one connection.")
        return cleaned

    def save(self, commit=True):
        channel = super().save(commit=False)
        if target := self.cleaned_data.get("target", "").strip():
            channel.set_target(target)
        if channel.kind == Channel.WEBHOOK and not channel.secret_encrypted:
            channel.set_secret(new_signing_secret())
        if commit:
            channel.save()
            self.save_m2m()
        return channel
