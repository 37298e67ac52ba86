"""Admin pages. Admin edits bypass the services, so each save invalidates what it changed."""

from django.contrib import admin

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber
from leads.services.cache_keys import invalidate_lead_on_commit
from monitoring.cache import gate


class PhoneNumberInline(admin.TabularInline):
    model = PhoneNumber
    extra = 1


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "timezone", "address"]
    search_fields = ["name", "numbers__e164"]
    inlines = [PhoneNumberInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # An organization's details and numbers live in many cached call contexts.
        gate.flush(
            actor=request.user.get_username(),
            reason=f"organization {form.instance} edited",
            source="admin",
        )


class LeadCacheMixin:
    """Invalidate the lead a saved or deleted object belongs to."""

    def lead_of(self, obj) -> Lead:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        lead = self.lead_of(obj)
        invalidate_lead_on_commit(lead.organization_id, lead.phone, lead.id)

    def delete_model(self, request, obj):
        lead = self.lead_of(obj)
        lead_id = lead.id  # deleting the lead itself clears its id
        super().delete_model(request, obj)
        invalidate_lead_on_commit(lead.organization_id, lead.phone, lead_id)


@admin.register(Lead)
class LeadAdmin(LeadCacheMixin, admin.ModelAdmin):
    list_display = ["phone", "name", "organization", "status", "last_contact_at"]
    list_filter = ["status", "organization"]
    search_fields = ["phone", "name"]
    readonly_fields = ["created_at", "updated_at"]

    def lead_of(self, obj):
        return obj


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["created_at", "role", "body", "delivery_status", "provider_message_id"]
    readonly_fields = ["provider_message_id"]


@admin.register(Conversation)
class ConversationAdmin(LeadCacheMixin, admin.ModelAdmin):
    list_display = ["id", "lead", "channel", "status", "started_at", "duration_seconds"]
    list_filter = ["channel", "status"]
    search_fields = ["lead__phone", "lead__name", "provider_id"]
    readonly_fields = ["provider_id"]
    raw_id_fields = ["lead"]
    inlines = [MessageInline]

    def lead_of(self, obj):
        return obj.lead

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        lead = form.instance.lead
        invalidate_lead_on_commit(lead.organization_id, lead.phone, lead.id)


@admin.register(Message)
class MessageAdmin(LeadCacheMixin, admin.ModelAdmin):
    list_display = ["created_at", "lead", "role", "delivery_status"]
    list_filter = ["role", "delivery_status"]
    search_fields = ["lead__phone", "body", "provider_message_id"]
    readonly_fields = ["provider_message_id"]
    raw_id_fields = ["lead", "conversation"]

    def lead_of(self, obj):
        return obj.lead
