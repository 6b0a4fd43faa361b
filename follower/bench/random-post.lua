-- wrk script for follower/bench/write-path: POSTs a random line of the file
-- named by the environment variable BODIES (one JSON-RPC request per line)
-- and counts answers that are not a JSON-RPC result; `done` prints
-- "errors <n>" so the benchmark can refuse a run that measured failures.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(os.getenv("BODIES")) do
    table.insert(bodies, line)
  end
  errors = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if status ~= 200 or not body:find('"result"', 1, true) then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("errors")
  end
  io.write(string.format("errors %d\n", total))
end
