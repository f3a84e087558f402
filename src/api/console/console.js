// Live updates of a channel page: each message posted from now on is
// added to the list as text (never as markup).
"use strict";

// A form that acts on message `m` (its token and cursor), as the page's own.
function action(list, m, verb, label) {
  const form = document.createElement("form");
  form.className = "action";
  form.method = "post";
  form.action = list.dataset.path + "/" + verb;
  for (const [name, value] of [["token", list.dataset.token], ["cursor", m.cursor]]) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = label;
  form.appendChild(button);
  return form;
}

function item(list, m) {
  const li = document.createElement("li");
  li.className = "message " + m.priority + (m.ahead ? " ahead" : "");
  li.dataset.cursor = m.cursor;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = m.author + "@" + m.origin + "#" + m.seq;
  li.appendChild(meta);
  if (m.priority === "flash" || m.priority === "urgent") {
    const flag = document.createElement("span");
    flag.className = "flag";
    flag.textContent = m.priority.toUpperCase();
    li.appendChild(flag);
  }
  if (m.ack_required) {
    const ask = document.createElement("span");
    ask.className = "flag ask";
    ask.textContent = "ACK REQUIRED";
    li.appendChild(ask);
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.kind === "ack" ? "acknowledged" : m.text;
  li.appendChild(text);
  if (m.needs_my_ack) {
    li.appendChild(action(list, m, "ack", "Acknowledge"));
  }
  return li;
}

document.addEventListener("DOMContentLoaded", () => {
  // Every operator action asks first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) {
        e.preventDefault();
      }
    });
  }
  const list = document.getElementById("messages");
  if (!list || !list.dataset.events) {
    return;
  }
  const events = new EventSource(list.dataset.events);
  events.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    const seen = list.querySelector('[data-cursor="' + CSS.escape(m.cursor) + '"]');
    if (seen) {
      return;
    }
    list.appendChild(item(list, m));
    document.body.classList.toggle("alert", m.priority === "flash");
  });
});
