// The official e2b npm SDK's own typed API client (ApiClient over E2B's OpenAPI document) calling the routes of
// issue 15 that the SDK's document has: v2 sandbox logs with filters and team metrics. Prints one JSON object
// with what each call answered; tests/e2e/test_cli.py checks it.
import { ApiClient, ConnectionConfig } from 'e2b'

const [sandboxID, teamID] = process.argv.slice(2)
const client = new ApiClient(new ConnectionConfig())
const answer = (r) => ({ status: r.response.status, data: r.data ?? r.error })
const logs = (query) =>
  client.api.GET('/v2/sandboxes/{sandboxID}/logs', { params: { path: { sandboxID }, query } }).then(answer)

const out = {
  all: await logs({}),
  info: await logs({ level: 'info', search: 'envd listening' }),
  error: await logs({ level: 'error' }),
  backward: await logs({ direction: 'backward', limit: 1 }),
  future: await logs({ cursor: Date.now() + 60_000 }),
  badDirection: await logs({ direction: 'sideways' }),
  metrics: answer(
    await client.api.GET('/teams/{teamID}/metrics', {
      params: { path: { teamID }, query: { start: Math.floor(Date.now() / 1000) - 600 } },
    }),
  ),
  max: answer(
    await client.api.GET('/teams/{teamID}/metrics/max', {
      params: { path: { teamID }, query: { metric: 'concurrent_sandboxes' } },
    }),
  ),
  otherTeam: answer(await client.api.GET('/teams/{teamID}/metrics', { params: { path: { teamID: 'team_not_mine' } } })),
}
console.log(JSON.stringify(out))
