from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.utils import timezone

from .models import Budget, ModelPrice
from .selectors import STACKS, Period

PERIODS = [("7", "Last 7 days"), ("30", "Last 30 days"), ("90", "Last 90 days"), ("custom", "Custom")]
MAX_DAYS = 366
EARLIEST = date(2000, 1, 1)  # before any batch; keeps date arithmetic far from year 1 and 9999


def stack_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in STACKS] + [(f"meta:{key}", f"metadata: {key}")
                                                for key in settings.USAGE_METADATA_KEYS]


class UsageFilterForm(forms.Form):
    """The usage page's query string. Each field it cannot read falls back on its own (a bad period to the last
    30 days, a bad stack to the model), and the page says why."""

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
            today = timezone.now().date()
            if start < EARLIEST or end > today + timedelta(days=MAX_DAYS):
                raise forms.ValidationError(f"A period lies between {EARLIEST} and a year from today.")
        return data

    def period_value(self) -> Period:
        """The period asked for, or the last 30 days when it cannot be read (grouped as asked, if that can)."""
        self.is_valid()
        data, today = self.cleaned_data, timezone.now().date()
        group = data.get("group") or self.DEFAULTS["group"]
        if data.get("period") == "custom" and not self.non_field_errors() and data.get("start") and data.get("end"):
            return Period(data["start"], data["end"], group)
        chosen = data.get("period")
        days = int(chosen if chosen and chosen != "custom" else self.DEFAULTS["period"])
        return Period(today - timedelta(days=days - 1), today, group)

    def stack_value(self) -> str:
        self.is_valid()
        return self.cleaned_data.get("stack") or self.DEFAULTS["stack"]


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
        cached, uncached = data.get("cached_input"), data.get("input")
        if cached is not None and uncached is not None and cached > uncached:
            self.add_error("cached_input", "Cached input costs at most what input costs: check the two prices.")
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
        if data.get("meta_value") and not data.get("meta_key"):
            self.add_error("meta_key", "Choose the metadata key this value is for (team for team=growth); without "
                                       "one the budget would count every batch.")
        return data
