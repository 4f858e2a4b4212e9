// Package sqibssim is an in-memory stand-in for Callgoose SQIBS's incident
// API (POST <base>/v1/process), used by `make dev` and by end-to-end tests.
// It implements the API filter of DESIGN §5 with SQIBS's documented
// semantics and lets tests inject faults (error statuses, hangs, dropped
// connections) per call.
//
// Routes: POST on any path ending in /v1/process (so /v1/process and
// /sqibs-api/v1/process both work); GET /incidents (JSON list); GET
// /history (the incidents with every call each received, bounded, and the
// calls that reached none; ?id= narrows it to one id); GET /dead-letters
// (JSON list of the bridge's dead letters, when SetDeadLetters gave it a
// source; 404 otherwise); GET / (an HTML page of all three that refreshes
// itself); POST /reset (Reset, refused with 403 when a browser sends it
// from another origin; 303 to /). Other methods get 405, other paths 404.
//
// The history keeps every POST to the process endpoint, processed or not
// (401, 413, simulated faults: what the bridge saw matters as much as what
// SQIBS did), under the newest incident of its event.id, or else as
// unmatched; within MaxCallsPerIncident, MaxHistoryIncidents and
// MaxUnmatchedCalls, which bound the calls kept, never the incidents.
//
// What SQIBS documents and the simulator follows:
//   - The token comes as `Authorization: Bearer <token>` or `?token=<token>`;
//     a missing or unknown token gets 401 {"error":"unauthorized"}.
//   - Trigger when the status key contains FAILED or ERROR, resolve when it
//     contains PASSED or FIXED; incidents are mapped with event.id.
//   - Title `<from> - <event.description>`, or just the description when the
//     `from` query parameter is absent; "Incident from <from>" or "Incident
//     from unknown source" when the description key is missing. The incident
//     description is the full payload.
//   - 201 when an incident was created (and resolved if applicable), 200 when
//     the call was processed (and resolved), 202 when no filter matched. The
//     body is {"id","resolved":{"duplicate","resolved"},"triggered":{"duplicate","created"}}.
//   - A Content-Type that is neither text nor JSON is treated as an empty
//     payload.
//
// Assumptions where SQIBS's documentation is silent:
//   - The status key is read at event.status and the other fields at
//     event.<name> (the bridge's shape); a top-level "status" is not looked
//     at, so a bridge that sent the wrong shape fails visibly. Non-string
//     values are compared by their JSON text.
//   - "Contains" is a case-sensitive substring test ("BUILD_FAILED"
//     triggers, "failed" does not), as the bridge always sends upper case.
//   - A trigger for an id that already has an open incident creates nothing:
//     200 with triggered.duplicate=true, and the open incident's Triggers
//     count goes up. This is what an alerting system must do with the
//     repeated "still failing" events Buildkite produces.
//   - A resolve with nothing open for its id answers 200 with
//     resolved.resolved=false: the resolve filter did match, so 202 ("no
//     valid filter") would be untrue, and nothing was resolved. Its
//     resolved.duplicate is true when the id's latest incident is already
//     resolved (a repeated resolve) and false when the id was never seen.
//   - Trigger and resolve filters are evaluated independently, trigger first;
//     a status containing both kinds of word would open and then resolve.
//   - A trigger without event.id creates an unmapped incident every time
//     (it can never be deduplicated or resolved); a resolve without it
//     resolves nothing.
//   - A body that is not a JSON object matches no filter: 202.
//   - Bodies over 1 MiB get 413 and are not processed.
//   - An empty configured token authorizes nothing (fail closed).
package sqibssim
