from django import forms
from django.contrib import admin

from monitoring.cache import controls, switch
from monitoring.cache.controls import may_flip
from monitoring.models import CacheSwitch, SwitchAudit


class CacheSwitchForm(forms.ModelForm):
    reason = forms.CharField(max_length=500, help_text="Why: kept in the audit log.")

    class Meta:
        model = CacheSwitch
        fields = ["enabled"]

    def clean(self):
        if switch.environment_source() != switch.RUNTIME:
            raise forms.ValidationError(
                f"The switch cannot be flipped: {switch.why_unavailable()}."
            )
        return super().clean()


@admin.register(CacheSwitch)
class CacheSwitchAdmin(admin.ModelAdmin):
    """The switch, flipped through the same service function as the dashboard and the CLI."""

    form = CacheSwitchForm
    list_display = ["__str__", "changed_at", "changed_by", "reason"]
    readonly_fields = ["generation", "changed_at", "changed_by"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Flipping needs the permission the dashboard asks for, not only Django's change one.
        return super().has_change_permission(request, obj) and may_flip(request.user)

    def save_model(self, request, obj, form, change):
        controls.flip(
            form.cleaned_data["enabled"],
            user=request.user,
            reason=form.cleaned_data["reason"],
            source="admin",
        )


@admin.register(SwitchAudit)
class SwitchAuditAdmin(admin.ModelAdmin):
    list_display = [
        "at",
        "actor",
        "action",
        "old_enabled",
        "new_enabled",
        "generation",
        "source",
        "reason",
    ]
    list_filter = ["action", "source"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
