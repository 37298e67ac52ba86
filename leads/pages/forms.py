from django import forms

from leads.models import Lead


class LeadFilterForm(forms.Form):
    q = forms.CharField(max_length=100, required=False, label="Name or phone")
    status = forms.ChoiceField(choices=[("", "any"), *Lead.Status.choices], required=False)
    page = forms.IntegerField(min_value=1, required=False)

    def filters(self) -> dict:
        """The filters to apply: the valid values, the defaults for anything else."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return {
            "search": data.get("q") or "",
            "status": data.get("status") or "",
            "page": data.get("page") or 1,
        }
