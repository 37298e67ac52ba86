"""Plain-data copies of rows: what the cache stores and what services return."""

from leads.models import Conversation, Lead, Message, Organization


def organization_snapshot(org: Organization) -> dict:
    return {
        "id": org.id,
        "name": org.name,
        "address": org.address,
        "timezone": org.timezone,
        "business_hours": org.business_hours,
        "sms_auto_reply": org.sms_auto_reply,
        "sms_help_text": org.sms_help_text,
    }


def lead_snapshot(lead: Lead) -> dict:
    return {
        "id": lead.id,
        "organization_id": lead.organization_id,
        "phone": lead.phone,
        "name": lead.name,
        "status": lead.status,
        "interest": lead.interest,
        "qualification": lead.qualification,
        "sentiment": lead.sentiment,
        "last_contact_at": lead.last_contact_at,
        "sms_opted_out": lead.sms_opted_out_at is not None,
        "sms_opted_out_at": lead.sms_opted_out_at,
        "sms_opt_out_keyword": lead.sms_opt_out_keyword,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
    }


def message_snapshot(message: Message) -> dict:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "channel": message.conversation.channel,
        "role": message.role,
        "body": message.body,
        "delivery_status": message.delivery_status,
        "delivery_error": message.delivery_error,
        "created_at": message.created_at,
    }


def conversation_snapshot(conversation: Conversation) -> dict:
    return {
        "id": conversation.id,
        "lead_id": conversation.lead_id,
        "channel": conversation.channel,
        "provider_id": conversation.provider_id,
        "status": conversation.status,
        "started_at": conversation.started_at,
        "ended_at": conversation.ended_at,
        "duration_seconds": conversation.duration_seconds,
        "title": conversation.title,
        "summary": conversation.summary,
    }
