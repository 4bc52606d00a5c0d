-- POST /bhr/api/block for one network over and over (extend off): every request is a
-- duplicate of the block the script made first. Needs TOKEN.
wrk.method = "POST"
wrk.body = "cidr=198.51.100.7&source=dup&why=again&duration=3600&extend=False"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function init(args)
  wrk.headers["Authorization"] = "Token " .. os.getenv("TOKEN")
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    wrk.thread:stop()
  end
end
