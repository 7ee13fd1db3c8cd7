package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
function format_request(e)
  return wrk.format("GET", "/healthz")
end
function request()
  return pick().request
end
