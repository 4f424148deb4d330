// A frontend's first session, written against the client generated from /v1/schema
// (openapi-typescript types + openapi-fetch). tests/test_typescript_client.py
// generates generated/api.d.ts from the live server, type-checks this file with tsc
// (a schema that drifts from what this code expects fails the build) and runs it
// against the same server: log in, create an org, a property and an expense, list
// and summarise. Exits non-zero on the first unexpected answer.
import createClient from "openapi-fetch";
import type { paths } from "../generated/api.js";

declare const process: { env: Record<string, string | undefined>; exitCode?: number };

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const baseUrl = process.env.API_BASE_URL ?? "http://127.0.0.1:8000";
const api = createClient<paths>({ baseUrl });

async function main(): Promise<void> {
  const login = await api.POST("/v1/auth/token", {
    body: { username: process.env.API_USERNAME ?? "", password: process.env.API_PASSWORD ?? "" },
  });
  check(login.data, `login failed: ${login.response.status}`);
  const headers = { Authorization: `Token ${login.data.token}` };

  const org = await api.POST("/v1/orgs", { headers, body: { name: "TypeScript Hotel" } });
  check(org.data && org.response.status === 201, `create org: ${org.response.status}`);
  const orgId = org.data.id;
  check(org.data.role === "owner", "the creator owns the org");

  const property = await api.POST("/v1/orgs/{org_id}/properties", {
    headers,
    params: { path: { org_id: orgId } },
    body: { name: "Harbour View", currency: "EUR", timezone: "Europe/Lisbon" },
  });
  check(property.data && property.response.status === 201, `create property: ${property.response.status}`);

  const expense = await api.POST("/v1/orgs/{org_id}/expenses", {
    headers: { ...headers, "Idempotency-Key": `ts-client-${orgId}` },
    params: { path: { org_id: orgId } },
    body: {
      property_id: property.data.id,
      amount: "42.10",
      currency: "EUR",
      category: "laundry",
      occurred_on: "2026-11-28",
    },
  });
  check(expense.data && expense.response.status === 201, `create expense: ${expense.response.status}`);
  check(expense.data.amount === "42.10", `amount kept exactly: ${expense.data.amount}`);

  const listed = await api.GET("/v1/orgs/{org_id}/expenses", {
    headers,
    params: { path: { org_id: orgId }, query: { page_size: 10 } },
  });
  check(listed.data, `list: ${listed.response.status}`);
  check(listed.data.results.length === 1 && listed.data.next === null, "one expense, one page");
  check(listed.data.results[0]?.id === expense.data.id, "the listed expense is the created one");

  const summary = await api.GET("/v1/orgs/{org_id}/finance/summary", {
    headers,
    params: { path: { org_id: orgId } },
  });
  check(summary.data, `summary: ${summary.response.status}`);
  const eur = summary.data.totals.find((total) => total.currency === "EUR");
  check(eur && eur.expense === "42.10" && eur.net === "-42.10", `summary totals: ${JSON.stringify(eur)}`);

  const missing = await api.GET("/v1/orgs/{org_id}", {
    headers,
    params: { path: { org_id: "00000000-0000-7000-8000-000000000000" } },
  });
  check(missing.error && missing.response.status === 404, `another org is 404: ${missing.response.status}`);
  check(typeof missing.error.detail === "string", "errors are documented {detail} bodies");

  console.log(JSON.stringify({ org: orgId, expense: expense.data.id, summary: summary.data.totals }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
