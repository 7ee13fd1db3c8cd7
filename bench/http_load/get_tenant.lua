package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
-- Walks the tokens in order, so every tenant is touched (the 10,000-actor memory run).
local i = 0
function request()
  i = i + 1
  local e = entries[((i - 1) % #entries) + 1]
  return wrk.format("GET", "/tenant", { ["Authorization"] = "Bearer " .. e.token })
end
