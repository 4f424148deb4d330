# Edge cache for the hospitality finance API (CONTRACT §6, docs/edge-cache.md).
#
# - /v2/ goes to the realtime (ASGI) server; websocket upgrades are piped.
# - Only GET/HEAD under /v1/orgs/{org_id}/ may come from the cache; everything else is
#   passed with its method intact (Varnish would turn a cache-miss POST into a GET).
# - Authorization at the edge: before looking up an org object, the edge asks the
#   origin "may this token read this org?" (GET /v1/edge/authz/{org_id}, cached per
#   token and org for the origin's s-maxage, a few seconds, tagged with its user so a
#   revocation purges it) and then restarts into the real lookup. Callers the origin refuses are passed to the origin, which answers
#   401/404 itself: they never see a cached object.
# - The cache key is URL + Host (the org is in the path); only Accept-Encoding varies
#   (plus Origin, which CORS needs). Objects carry xkey tags; PURGE with an
#   `xkey-purge` (hard) or `xkey-softpurge` header removes them by tag.
# - The tags and the s-maxage are for the edge only: clients get them stripped, and
#   `Cache-Control: private, no-cache`.
#
# Backends `rest` and `realtime` and the ACL `purgers` live in edge-backends.vcl,
# rendered from edge-backends.vcl.in with the ports of this deployment (bin/stack,
# the test suite and the benchmark all render it the same way).
vcl 4.1;

import std;
import var;
import xkey;

include "edge-backends.vcl";

sub vcl_recv {
    if (req.restarts == 0) {
        # Our own request markers: never believe a client's copy.
        unset req.http.X-Edge-Auth;
        unset req.http.X-Edge-Preflight;
        unset req.http.X-Edge-Url;
        unset req.http.X-Edge-Cache;
        unset req.http.X-Edge-Bucket;
    }

    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge && !req.http.xkey-softpurge) {
            return (synth(400, "Send the tags in an xkey-purge or xkey-softpurge header"));
        }
        # Noted before the removal: a fill checked after this point sees the purge.
        call edge_note_purge;
        if (req.http.xkey-purge) {
            set req.http.X-Edge-Purged = xkey.purge(req.http.xkey-purge);
        } else {
            set req.http.X-Edge-Purged = xkey.softpurge(req.http.xkey-softpurge);
        }
        return (synth(200, "Purged"));
    }

    if (req.url ~ "^/v2/") {
        set req.backend_hint = realtime;
        if (req.http.Upgrade ~ "(?i)^websocket$") {
            return (pipe);
        }
        return (pass);
    }
    set req.backend_hint = rest;

    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    if (req.url !~ "^/v1/orgs/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(/|\?|$)") {
        return (pass);
    }
    if (req.http.Cookie) {
        # Browser sessions (admin) are not API clients; never share their answers.
        return (pass);
    }

    if (req.restarts == 0) {
        # The org's purge bucket (edge_note_purge), for vcl_hit and vcl_backend_response
        # (as bereq.http.X-Edge-Bucket); a header, so it outlives the restarts.
        set req.http.X-Edge-Bucket = regsub(req.url, "^/v1/orgs/[0-9a-f-]{32}([0-9a-f]{4}).*$", "\1");
        if (!req.http.Authorization) {
            return (pass);  # the origin says 401
        }
        # Step 1: the auth preflight, looked up per token and org.
        set req.http.X-Edge-Url = req.url;
        set req.http.X-Edge-Preflight = "1";
        set req.url = regsub(req.url, "^/v1/orgs/([0-9a-f-]{36}).*$", "/v1/edge/authz/\1");
        return (hash);
    }
    if (req.http.X-Edge-Auth == "allowed") {
        return (hash);  # step 2: the shared org object
    }
    return (pass);  # refused by the preflight: the origin answers 401/404 itself
}

# A purge removes the copies in the cache, but not a copy still being fetched: a fill
# that read the database before the write committed would be stored after the purge
# and served stale for its whole s-maxage. So each purge notes its time, per org
# (hashed to 65536 buckets by the last 4 hex digits of the org id, to bound memory), and
# vcl_backend_response refuses to store a fill that started before such a purge, and
# vcl_hit refetches a copy fetched before one. A purge naming one org (its sections and
# its properties' tags: every object of its properties lives under its URL) notes that
# org's bucket; one naming several orgs, or none (a user's auth answers), notes "any".
sub edge_note_purge {
    set req.http.X-Edge-Purge-Tags = req.http.xkey-purge + " " + req.http.xkey-softpurge;
    set req.http.X-Edge-Purge-Time = "" + std.time2real(now, 0.0);
    if (req.http.X-Edge-Purge-Tags ~ "org-[0-9a-f-]{36}"
        && req.http.X-Edge-Purge-Tags !~ "org-([0-9a-f-]{36})\b.*\borg-(?!\1)[0-9a-f-]{36}") {
        var.global_set("purged-" + regsub(req.http.X-Edge-Purge-Tags,
            "^.*?org-[0-9a-f-]{32}([0-9a-f]{4}).*$", "\1"), req.http.X-Edge-Purge-Time);
    } else {
        var.global_set("purged-any", req.http.X-Edge-Purge-Time);  # several orgs: all of them
    }
}

sub vcl_hash {
    hash_data(req.url);
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    if (req.http.X-Edge-Preflight) {
        # An auth answer belongs to one token; org objects belong to no token.
        hash_data(req.http.Authorization);
    }
    return (lookup);
}

sub vcl_hit {
    # vcl_backend_response refuses a fill that started before a purge of its org, but a
    # purge can also land between that check and the copy's insertion (a thread on a busy
    # machine may sleep there): the copy is then stored after the purge, with data from
    # before the write. Such a copy was fetched (obj.age back from now) shortly before a
    # purge of its org: a copy fetched within the second before a purge of its org's
    # bucket (a purge counts to the end of its millisecond) is fetched again, replacing
    # it. Older copies of the org that the purge did not name stay: the race needs a fill
    # in flight. Only the org's bucket counts: "any" (a user's revocation, several orgs at
    # once) would refetch everything fetched in that second; the app purges one org per
    # PURGE, and auth answers are short-lived.
    if (!req.http.X-Edge-Preflight) {
        set req.http.X-Edge-Purged-At = var.global_get("purged-" + req.http.X-Edge-Bucket);
        if (std.real(req.http.X-Edge-Purged-At, 0.0) + 0.001 >= std.time2real(now - obj.age, 0.0)
            && std.real(req.http.X-Edge-Purged-At, 0.0) - 1.0 <= std.time2real(now - obj.age, 0.0)) {
            unset req.http.X-Edge-Purged-At;
            set req.hash_always_miss = true;
            return (restart);
        }
        unset req.http.X-Edge-Purged-At;
    }
    set req.http.X-Edge-Cache = "HIT";
}

sub vcl_miss {
    set req.http.X-Edge-Cache = "MISS";
}

sub vcl_pass {
    set req.http.X-Edge-Cache = "PASS";
}

sub vcl_pipe {
    if (req.http.Upgrade) {
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }
}

sub vcl_backend_response {
    if (bereq.http.X-Edge-Preflight) {
        # Only "allowed" is remembered (for the origin's s-maxage); a refusal is asked
        # again next time, so a member added to an org is let in at once.
        if (beresp.status != 200) {
            set beresp.uncacheable = true;
            set beresp.ttl = 0s;
        }
        # A revocation purges its user's answers (tag user-{id}, noted as "purged-any");
        # an "allowed" fetched before that purge must not be stored after it.
        if (std.real(var.global_get("purged-any"), 0.0) >= std.time2real(bereq.time, 0.0)) {
            set beresp.uncacheable = true;
            set beresp.ttl = 0s;
        }
        set beresp.grace = 0s;
        # Read the (tiny) body in full before vcl_deliver restarts, so the backend
        # connection is reused instead of closed mid-stream.
        set beresp.do_stream = false;
        return (deliver);
    }
    if (bereq.uncacheable) {
        return (deliver);  # a pass
    }
    # An org object is stored only when the origin marked it for the edge (s-maxage),
    # it is a 200, and it sets no cookie. Anything else is fetched again every time.
    if (beresp.status != 200 || beresp.http.Set-Cookie || beresp.http.Cache-Control !~ "s-maxage=[1-9]") {
        set beresp.uncacheable = true;
        set beresp.ttl = 5s;
        return (deliver);
    }
    # A purge for this org arrived while this copy was on its way: it may predate the
    # write, so hand it to the waiting clients but do not store it.
    # The purge times are stored as text, which VCL writes with 3 decimals: a purge at
    # 100.0007 reads back as 100.001 or 100.000, and a fill that started at 100.0003,
    # before the purge, would pass a plain comparison. So a purge counts as late as the
    # end of its millisecond (refusing one harmless extra fill now and then).
    if (std.real(var.global_get("purged-" + bereq.http.X-Edge-Bucket), 0.0) + 0.001 >= std.time2real(bereq.time, 0.0)
        || std.real(var.global_get("purged-any"), 0.0) + 0.001 >= std.time2real(bereq.time, 0.0)) {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        set beresp.http.X-Edge-Fill = "raced-purge";
        return (deliver);
    }
    # Hard purges only remove; never serve anything past its s-maxage either.
    set beresp.grace = 0s;
    return (deliver);
}

sub vcl_deliver {
    if (req.http.X-Edge-Preflight) {
        unset req.http.X-Edge-Preflight;
        set req.url = req.http.X-Edge-Url;
        if (resp.status == 200) {
            set req.http.X-Edge-Auth = "allowed";
        } else {
            set req.http.X-Edge-Auth = "denied";
        }
        return (restart);
    }
    # Tags and shared-cache lifetimes are for the edge, not for clients or proxies.
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    unset resp.http.Cache-Tag;
    unset resp.http.X-Edge-Fill;
    if (resp.http.Cache-Control ~ "s-maxage") {
        set resp.http.Cache-Control = "private, no-cache";
    }
    set resp.http.X-Cache = req.http.X-Edge-Cache;
}

# Errors are JSON like the rest of the API (CONTRACT: never an HTML error page).
sub vcl_backend_error {
    set beresp.http.Content-Type = "application/json";
    set beresp.http.Cache-Control = "private, no-store";
    set beresp.http.Retry-After = "5";
    set beresp.body = "{" + {""detail": "The service is unavailable; try again shortly.""} + "}";
    return (deliver);
}

sub vcl_synth {
    if (req.http.X-Edge-Purged) {
        set resp.http.X-Purged = req.http.X-Edge-Purged;  # objects removed by the purge
    }
    set resp.http.Content-Type = "application/json";
    set resp.http.Cache-Control = "private, no-store";
    set resp.body = "{" + {""detail": ""} + resp.reason + {"""} + "}";
    return (deliver);
}
