-- wrk script for POST /v1/messages (used by bench/load.py).
-- Every request gets a DISTINCT Idempotency-Key and a distinct, realistic sender
-- (a replayed body would only measure the duplicate path). Distinctness comes from
-- a per-thread counter plus the thread number plus a run tag.
-- Arguments after `--`: TOKEN RUN_TAG
-- done() prints one line "BENCH_RESULT {json}" that bench/load.py parses.

local threads = {}
counter = 0  -- global: done() reads it from each thread with thread:get

local FIRST = {"Anna", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Grace", "Hiro",
               "Ines", "Jonas", "Kemal", "Lena", "Mateo", "Nadia", "Oskar", "Priya"}
local LAST = {"Schmidt", "Okafor", "Rossi", "Ivanova", "Yilmaz", "Haddad", "Lee",
              "Tanaka", "Costa", "Berg", "Demir", "Novak", "Garcia", "Rahman", "Lund"}
local SUBJECTS = {"Order %s has not arrived", "Refund for order %s",
                  "Cannot log in since yesterday (%s)", "Invoice %s shows the wrong address",
                  "Question about my subscription %s"}
local TEXTS = {
  "Hello, I ordered item %s on the 3rd and it still has not arrived. The tracking page "
    .. "says the parcel left the warehouse but nothing has changed for four days now. "
    .. "Could you check what happened and tell me when I can expect it? My customer "
    .. "number is %s. Thank you, %s",
  "Hi there, I returned the package for order %s two weeks ago and the refund is still "
    .. "not on my card. The courier confirmed the delivery to your warehouse. Could you "
    .. "please look into it and let me know how long it usually takes? Reference %s. "
    .. "Best regards, %s",
  "Good morning, since yesterday I cannot log in to my account (ticket %s). The reset "
    .. "link in the email says it has expired even when I click it right away. I tried "
    .. "two browsers and cleared the cache. Could someone reset it for me? Account %s. "
    .. "Thanks a lot, %s",
}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  token = args[1] or "missing-token"
  tag = args[2] or "run"
  statuses = {}
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

function request()
  counter = counter + 1
  local n = counter
  local id = tid .. "-" .. n
  local name = FIRST[(n % #FIRST) + 1] .. " " .. LAST[((n * 7 + tid) % #LAST) + 1]
  local subject = string.format(SUBJECTS[(n % #SUBJECTS) + 1], id)
  local text = string.format(TEXTS[(n % #TEXTS) + 1], id, tag .. "-" .. id, name)
  local body = string.format(
    '{"from":{"email":"user%s.%s@example%d.com","name":"%s"},"subject":"%s","text":"%s"}',
    tag, id, (n + tid) % 97, name, subject, text)
  headers["Idempotency-Key"] = tag .. "-" .. id
  return wrk.format("POST", "/v1/messages", headers, body)
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  local sent = 0
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s then
      for code, count in pairs(s) do
        counts[code] = (counts[code] or 0) + count
      end
    end
    sent = sent + (thread:get("counter") or 0)
  end
  local parts = {}
  for code, count in pairs(counts) do
    parts[#parts + 1] = string.format('"%d":%d', code, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,"sent":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%.1f,"mean":%.1f,"stdev":%.1f,"max":%.1f,'
      .. '"p50":%.1f,"p75":%.1f,"p90":%.1f,"p99":%.1f,"p99_9":%.1f},'
      .. '"statuses":{%s}}\n',
    summary.duration, summary.requests, summary.bytes, sent,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ",")))
end
