from django.urls import path

from leads.webhooks import elevenlabs, twilio

app_name = "webhooks"

urlpatterns = [
    path(
        "elevenlabs/conversation-initiation",
        elevenlabs.conversation_initiation,
        name="elevenlabs-initiation",
    ),
    path("elevenlabs/post-call", elevenlabs.post_call, name="elevenlabs-post-call"),
    path("twilio/sms", twilio.inbound_sms, name="twilio-sms"),
    path("twilio/sms/status", twilio.sms_status, name="twilio-sms-status"),
]
