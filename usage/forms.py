from datetime import timedelta

from django import forms
from django.conf import settings
from django.utils import timezone

from .models import Budget, ModelPrice
from .selectors import STACKS, Period

PERIODS = [("7", "Last 7 days"), ("30", "Last 30 days"), ("90", "Last 90 days"), ("custom", "Custom")]
MAX_DAYS = 366


def stack_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in STACKS] + [(f"meta:{key}", f"metadata: {key}")
                                                for key in settings.USAGE_METADATA_KEYS]


class UsageFilterForm(forms.Form):
    """The usage page's query string; anything it does not know falls back to the last 30 days by model."""

    DEFAULTS = {"period": "30", "group": "day", "stack": "model"}

    period = forms.ChoiceField(choices=PERIODS, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    group = forms.ChoiceField(choices=[("day", "by day"), ("week", "by week")], required=False)
    stack = forms.ChoiceField(choices=(), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stack"].choices = stack_choices()

    def clean(self):
        data = super().clean()
        if data.get("period") == "custom":
            start, end = data.get("start"), data.get("end")
            if not start or not end:
                raise forms.ValidationError("A custom period needs a first and a last day.")
            if start > end:
                raise forms.ValidationError("The first day must not be after the last.")
            if (end - start).days >= MAX_DAYS:
                raise forms.ValidationError(f"A period spans at most {MAX_DAYS} days.")
        return data

    def period_value(self) -> Period:
        """The period asked for, or the last 30 days when the form is not valid."""
        data = self.cleaned_data if self.is_valid() else self.DEFAULTS
        today = timezone.now().date()
        group = data.get("group") or "day"
        if data.get("period") == "custom":
            return Period(data["start"], data["end"], group)
        days = int(data.get("period") or 30)
        return Period(today - timedelta(days=days - 1), today, group)

    def stack_value(self) -> str:
        return (self.cleaned_data.get("stack") if self.is_valid() else "") or self.DEFAULTS["stack"]


class PriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = ["model", "valid_from", "input", "cached_input", "output", "source"]
        widgets = {"valid_from": forms.DateInput(attrs={"type": "date"})}

    def clean(self):
        data = super().clean()
        for name in ("input", "cached_input", "output"):
            if data.get(name) is not None and data[name] < 0:
                self.add_error(name, "A price cannot be negative.")
        return data


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = ["name", "amount_usd", "period", "connection", "model", "meta_key", "meta_value"]

    def __init__(self, *args, connections, sees_all: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connection"].queryset = connections
        self.fields["connection"].required = not sees_all
        self.fields["meta_key"] = forms.ChoiceField(
            label="Metadata key", required=False,
            choices=[("", "(any)")] + [(key, key) for key in settings.USAGE_METADATA_KEYS],
            help_text="Counted by the keys of USAGE_METADATA_KEYS")

    def clean(self):
        data = super().clean()
        if data.get("amount_usd") is not None and data["amount_usd"] <= 0:
            self.add_error("amount_usd", "A budget is more than $0.")
        if data.get("meta_key") and not data.get("meta_value"):
            self.add_error("meta_value", "Give the value the metadata key must have (growth for team=growth).")
        if not data.get("meta_key"):
            data["meta_value"] = ""
        return data
