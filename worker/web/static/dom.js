// What both pages build their nodes with (loaded before app.js and api.js).
"use strict";

// A new element: attributes set (``text`` as its text, never parsed as HTML), children appended.
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}
