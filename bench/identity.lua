-- wrk script for the identity benchmark (bench/identity.py): POST /v1/messages from NEW
-- senders (never seen, as in messages.lua) and/or EXISTING stored contacts, whose emails
-- user{k}@stored.example (0 <= k < STORED) bench/identity_db.py wrote into the store.
-- Every request still gets a DISTINCT Idempotency-Key and a distinct text.
-- It loads messages.lua (new-sender bodies, status counts, the BENCH_RESULT line) and
-- replaces init() and request().
-- Arguments after `--`: TOKEN RUN_TAG MODE STORED, MODE one of mixed (alternating
-- new/existing), new, existing.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "messages.lua")
local new_sender_request = request

local SUBJECTS = {"Re: order %s", "Still waiting (%s)", "Follow-up on %s"}
local TEXTS = {
  "Hello again, I am writing about the same order as last time (%s). I still have not "
    .. "received anything and nobody answered my first message yet. The tracking page has "
    .. "not changed since then either. Could you please tell me what is going on? If the "
    .. "parcel is lost I would like a replacement as soon as possible. Reference %s.",
  "Hi, a quick follow-up on my earlier message (%s): the refund has still not arrived on "
    .. "my card. I attached the courier receipt last time. Could you confirm that the return "
    .. "was registered in your warehouse and give me a date for the refund? Reference %s.",
  "Good afternoon, the problem I reported before (%s) is back: I cannot log in again and "
    .. "the reset link expires immediately. I need access to my invoices this week. Could "
    .. "someone from your team call me or reset the account by hand? Reference %s.",
}

function init(args)
  token = args[1] or "missing-token"
  tag = args[2] or "run"
  mode = args[3] or "mixed"
  stored = tonumber(args[4] or "0") or 0
  statuses = {}
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  local seed = tid * 7919
  for i = 1, #tag do
    seed = (seed * 31 + tag:byte(i)) % 2147483647
  end
  math.randomseed(seed)
end

local function existing_sender_request()
  counter = counter + 1
  local n = counter
  local id = tid .. "-" .. n
  local k = math.random(0, stored - 1)
  local subject = string.format(SUBJECTS[(n % #SUBJECTS) + 1], id)
  local text = string.format(TEXTS[(n % #TEXTS) + 1], tag .. "-" .. id, k)
  local body = string.format(
    '{"from":{"email":"user%d@stored.example","name":"Stored Customer %d"},'
      .. '"subject":"%s","text":"%s"}',
    k, k, subject, text)
  headers["Idempotency-Key"] = tag .. "-" .. id
  return wrk.format("POST", "/v1/messages", headers, body)
end

function request()
  if stored < 1 or mode == "new" then
    return new_sender_request()
  elseif mode == "existing" or counter % 2 == 1 then
    return existing_sender_request()
  end
  return new_sender_request()
end
