-- GET the URL's path with the token in TOKEN and the cookie in COOKIE (if set); checks
-- for 200.
function init(args)
  local token = os.getenv("TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Token " .. token
  end
  local cookie = os.getenv("COOKIE")
  if cookie and cookie ~= "" then
    wrk.headers["Cookie"] = cookie
  end
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    wrk.thread:stop()
  end
end
