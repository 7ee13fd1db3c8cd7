-- The mixed load of issue 18: 80% GET /tasks/{id}, 15% GET /tasks?project_id= (a page of the
-- project's tasks), 5% POST /tasks, each request's kind drawn at random.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
local n = 0
function format_request(e)
  return wrk.format("GET", "/tasks/" .. e.task, { ["Authorization"] = "Bearer " .. e.token })
end
function request()
  local e = pick()
  local roll = math.random(100)
  if roll <= 80 then
    return e.request
  elseif roll <= 95 then
    return wrk.format("GET", "/tasks?project_id=" .. e.project .. "&limit=20",
      { ["Authorization"] = "Bearer " .. e.token })
  end
  n = n + 1
  local body = string.format('{"project_id":"%s","title":"mixed %d-%d-%d"}', e.project, tid or 0, n,
    math.random(1, 1000000000))
  return wrk.format("POST", "/tasks",
    { ["Authorization"] = "Bearer " .. e.token, ["Content-Type"] = "application/json" }, body)
end
