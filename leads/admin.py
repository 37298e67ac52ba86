"""Admin pages. Their saves, deletes and bulk actions bypass the services; the model layer
(leads.invalidation) invalidates what they change, old values included."""

from django.contrib import admin

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber


class PhoneNumberInline(admin.TabularInline):
    model = PhoneNumber
    extra = 1


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "timezone", "address"]
    search_fields = ["name", "numbers__e164"]
    inlines = [PhoneNumberInline]


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["phone", "name", "organization", "status", "last_contact_at"]
    list_filter = ["status", "organization"]
    search_fields = ["phone", "name"]
    readonly_fields = ["created_at", "updated_at"]


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["created_at", "role", "body", "delivery_status", "provider_message_id"]
    readonly_fields = ["provider_message_id"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "lead", "channel", "status", "started_at", "duration_seconds"]
    list_filter = ["channel", "status"]
    search_fields = ["lead__phone", "lead__name", "provider_id"]
    readonly_fields = ["provider_id"]
    raw_id_fields = ["lead"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "lead", "role", "delivery_status"]
    list_filter = ["role", "delivery_status"]
    search_fields = ["lead__phone", "body", "provider_message_id"]
    readonly_fields = ["provider_message_id"]
    raw_id_fields = ["lead", "conversation"]
