-- POST /bhr/api/block: a new /128 per request (unique per thread and request), the form
-- body bhr-client's block() sends. Needs TOKEN in the environment.
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = string.format("2001:db8:%x:%x::", tid, math.random(0, 65535))
  token = os.getenv("TOKEN")
end

function request()
  counter = counter + 1
  local body = string.format(
    "cidr=%s%x:%x&source=bench&why=load+test&duration=3600&autoscale=False&skip_whitelist=False&extend=False",
    prefix, math.floor(counter / 65536), counter % 65536)
  return wrk.format("POST", "/bhr/api/block", {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    wrk.thread:stop()
  end
end
