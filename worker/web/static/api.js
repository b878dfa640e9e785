// The API's reference, made in the page from /openapi.json: served with the package, so it
// reads the same offline (Swagger UI came from a CDN and was blank without one).
"use strict";

// A schema in a few words: its reference's name, its type and constraints.
function shape(schema = {}) {
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(shape).join(" or ");
  if (schema.type === "array") return `list of ${shape(schema.items)}`;
  const limits = ["pattern", "maxLength", "minimum", "maximum", "format"]
    .filter((key) => key in schema).map((key) => `${key} ${schema[key]}`);
  return [schema.type || "any", ...limits].join(", ") + ("default" in schema ? ` (default ${JSON.stringify(schema.default)})` : "");
}

function operation(path, method, op) {
  const parts = [element("h3", {}, element("code", { text: `${method.toUpperCase()} ${path}` }), ` ${op.summary || ""}`)];
  if (op.description) parts.push(element("p", { class: "doc", text: op.description }));
  const rows = (op.parameters || []).map((p) => element("li", {},
    element("code", { text: p.name }), ` (${p.in}${p.required ? ", required" : ""}): ${shape(p.schema)}`));
  for (const [type, body] of Object.entries(op.requestBody?.content || {})) {
    rows.push(element("li", { text: `body (${type}): ${shape(body.schema)}` }));
  }
  if (rows.length) parts.push(element("ul", {}, ...rows));
  parts.push(element("p", { class: "muted", text: `Answers: ${Object.keys(op.responses || {}).join(", ")}` }));
  return element("article", { class: "operation" }, ...parts);
}

function schemaEntry(name, schema) {
  const fields = Object.entries(schema.properties || {}).map(([field, s]) => element("li", {},
    element("code", { text: field }), `${(schema.required || []).includes(field) ? " (required)" : ""}: ${shape(s)}`));
  return element("article", {}, element("h3", { text: name }), element("ul", {}, ...fields));
}

document.addEventListener("DOMContentLoaded", async () => {
  const spec = await (await fetch("/openapi.json", { credentials: "same-origin" })).json();
  document.title = `${spec.info.title} ${spec.info.version}: the API`;
  const operations = Object.entries(spec.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => operation(path, method, op)));
  document.getElementById("operations").replaceChildren(...operations);
  document.getElementById("schemas").replaceChildren(
    ...Object.entries(spec.components?.schemas || {}).map(([name, s]) => schemaEntry(name, s)));
});
