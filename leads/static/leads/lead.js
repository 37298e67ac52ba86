/* A lead's page: the conversation timeline is fetched again (server-rendered) when a webhook
 * adds a message to this lead, or every few seconds while live updates are degraded. */
(function () {
  "use strict";

  var live = window.opsLive;
  var timeline = document.getElementById("timeline");
  if (!live || !timeline) {
    return;
  }

  var DEGRADED_POLL_MS = 3000;
  var leadId = Number(timeline.dataset.leadId);
  var shown = null;

  function messageIds() {
    var ids = {};
    timeline.querySelectorAll("[data-message-id]").forEach(function (item) {
      ids[item.dataset.messageId] = true;
    });
    return ids;
  }

  function refresh() {
    return fetch(timeline.dataset.timelineUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("timeline answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html === shown) {
          return;
        }
        var before = messageIds();
        shown = html;
        timeline.innerHTML = html;
        // Mark what arrived since the page was drawn, so a reader sees what is new.
        timeline.querySelectorAll("[data-message-id]").forEach(function (item) {
          if (!before[item.dataset.messageId]) {
            item.classList.add("msg--new");
          }
        });
      });
  }

  function forThisLead(payload) {
    return payload.lead_id === undefined || payload.lead_id === null || Number(payload.lead_id) === leadId;
  }

  live.on("lead.message", function (payload) {
    if (forThisLead(payload)) {
      refresh();
    }
  });
  live.on("call.updated", function (payload) {
    if (forThisLead(payload)) {
      refresh();
    }
  });
  live.on("resync", refresh);
  live.whileDegraded(refresh, DEGRADED_POLL_MS);
})();
