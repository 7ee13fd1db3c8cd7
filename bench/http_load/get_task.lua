package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
function format_request(e)
  return wrk.format("GET", "/tasks/" .. e.task, { ["Authorization"] = "Bearer " .. e.token })
end
function request()
  return pick().request
end
