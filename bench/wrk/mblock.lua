-- POST /bhr/api/mblock with 100 new records per request (JSON, as bhr-client's mblock()).
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = string.format("2001:db8:1%x:%x::", tid, math.random(0, 65535))
  token = os.getenv("TOKEN")
end

function request()
  local items = {}
  for i = 1, 100 do
    counter = counter + 1
    items[i] = string.format(
      '{"cidr":"%s%x:%x","source":"mbench","why":"load test","duration":"3600"}', prefix, math.floor(counter / 65536), counter % 65536)
  end
  return wrk.format("POST", "/bhr/api/mblock", {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/json",
  }, "[" .. table.concat(items, ",") .. "]")
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    wrk.thread:stop()
  end
end
