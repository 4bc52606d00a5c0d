-- GET the URL's path as a signed-in browser (the session cookie in COOKIE); checks for 200.
function init(args)
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
