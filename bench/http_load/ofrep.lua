package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
-- One flag (bench-flag, defined by the script with plan values and a rollout, so each answer
-- hashes its targeting key), evaluated for a tenant's user with the task id as targeting key.
function format_request(e)
  return wrk.format("POST", "/ofrep/v1/evaluate/flags/bench-flag", {
    ["Authorization"] = "Bearer " .. e.token,
    ["Content-Type"] = "application/json",
  }, '{"context":{"targetingKey":"' .. e.task .. '"}}')
end
function request()
  return pick().request
end
