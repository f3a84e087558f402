// The console's one script. It only ever adds text (textContent), never
// markup, so what a message says is shown, not run.
//  - live updates of a channel page (server-sent events);
//  - files: chosen or dropped, hashed here (SHA-256), uploaded with
//    progress, resumed from what the node holds, then named by the post;
//  - a receipts table that refreshes itself;
//  - every form with data-confirm asks first.
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

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

// The element that shows a file of kind `inline` ("image", "video" or
// "audio") at `url`.
function media(inline, url, name) {
  const shown = document.createElement(inline === "image" ? "img" : inline);
  shown.src = url;
  if (inline === "image") {
    shown.alt = name;
  } else {
    shown.controls = true;
    shown.preload = "metadata";
  }
  return shown;
}

function file(f) {
  const figure = document.createElement("figure");
  figure.className = "file";
  if (f.held && f.inline) {
    figure.appendChild(media(f.inline, f.url, f.name));
  }
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.href = f.url;
  link.download = f.name;
  link.textContent = f.name;
  caption.appendChild(link);
  caption.appendChild(document.createTextNode(" (" + f.size_shown + ")"));
  if (!f.held) {
    figure.dataset.arriving = f.url;
    figure.dataset.inline = f.inline || "";
    caption.appendChild(span("arriving", " — arriving"));
  }
  figure.appendChild(caption);
  return figure;
}

// A partner's file on its way is asked for every few seconds (the node
// answers 503 until it holds it) and shown once it is here.
function watchArriving() {
  setInterval(() => {
    for (const figure of document.querySelectorAll("figure.file[data-arriving]")) {
      if (figure.dataset.asking) {
        continue;
      }
      figure.dataset.asking = "1";
      const url = figure.dataset.arriving;
      fetch(url, { method: "HEAD" }).then((answer) => {
        delete figure.dataset.asking;
        if (answer.status === 503) {
          return; // not here yet
        }
        delete figure.dataset.arriving;
        const note = figure.querySelector(".arriving");
        if (note) {
          note.remove();
        }
        if (answer.ok && figure.dataset.inline) {
          const name = figure.querySelector("figcaption a").textContent;
          figure.insertBefore(media(figure.dataset.inline, url, name), figure.firstChild);
        }
      }, () => delete figure.dataset.asking);
    }
  }, 2000);
}

function item(list, m) {
  const li = document.createElement("li");
  li.className = "message " + m.priority + (m.ahead ? " ahead" : "");
  li.dataset.cursor = m.cursor;
  li.dataset.ref = m.origin + "#" + m.seq;
  li.appendChild(span("meta", m.author + "@" + m.origin + "#" + m.seq));
  li.appendChild(span("time", m.time));
  if (m.exercise) {
    li.appendChild(span("flag exercise", "EXERCISE"));
  }
  if (m.priority === "flash" || m.priority === "urgent") {
    li.appendChild(span("flag", m.priority.toUpperCase()));
  }
  if (m.needs_my_ack) {
    li.appendChild(span("flag ask", "ACK REQUIRED"));
  } else if (m.ack_required) {
    li.appendChild(span("flag asked", "acknowledgement asked"));
  }
  if (m.ack_required && m.due) {
    li.appendChild(span("due", "due " + m.due));
  }
  if (m.reply_to) {
    li.appendChild(span("reply", "reply to " + m.reply_to));
  }
  let text = m.text;
  if (m.kind === "ack") {
    text = "acknowledged " + (m.acknowledges || "");
  } else if (m.kind === "retraction") {
    text = "retracted " + (m.retracts || "");
  }
  li.appendChild(span("text", text));
  if (m.files.length > 0) {
    const files = document.createElement("div");
    files.className = "files";
    for (const f of m.files) {
      files.appendChild(file(f));
    }
    li.appendChild(files);
  }
  if (m.kind === "text") {
    const details = document.createElement("a");
    details.className = "details";
    details.href = list.dataset.path + "/m/" + m.cursor;
    details.textContent = "Receipts · reply";
    li.appendChild(details);
  }
  if (m.needs_my_ack) {
    const ack = action(list, m, "ack", "Acknowledge");
    ack.classList.add("needs-ack");
    li.appendChild(ack);
  }
  return li;
}

function live(list) {
  const events = new EventSource(list.dataset.events);
  events.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    const seen = list.querySelector('[data-cursor="' + CSS.escape(m.cursor) + '"]');
    if (seen) {
      return;
    }
    if (m.kind === "retraction" && m.retracts) {
      // The message it takes back loses its text and files at once.
      const gone = list.querySelector('[data-ref="' + CSS.escape(m.retracts) + '"]');
      if (gone) {
        for (const part of gone.querySelectorAll(".text, .files, form.action, .flag.ask, .flag.asked, .due")) {
          part.remove();
        }
        gone.appendChild(span("text retracted", "retracted by " + m.author + "@" + m.origin));
      }
    }
    list.appendChild(item(list, m));
    if (m.priority === "flash") {
      document.body.classList.add("alert");
      document.title = "FLASH — " + document.title.replace(/^FLASH — /, "");
    }
  });
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Uploads `f`, showing progress in `row`; resolves to what the post names.
// The file is read once to hash it (SHA-256, as the node checks it), then
// only what the node does not hold yet is sent.
async function upload(f, token, row) {
  const bar = row.querySelector("progress");
  const note = row.querySelector(".note");
  note.textContent = "checking…";
  const sha256 = hex(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()));
  const status = await fetch("/upload?sha256=" + sha256 + "&name=" + encodeURIComponent(f.name));
  if (!status.ok) {
    const doc = new DOMParser().parseFromString(await status.text(), "text/html");
    const why = doc.querySelector(".refusal");
    throw new Error(why ? why.textContent : "refused (" + status.status + ")");
  }
  const held = await status.json();
  if (!held.complete) {
    await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const query = "?sha256=" + sha256 + "&size=" + f.size + "&offset=" + held.held;
      xhr.open("POST", "/upload" + query);
      xhr.setRequestHeader("X-Samband-Token", token);
      xhr.upload.addEventListener("progress", (e) => {
        bar.value = (held.held + e.loaded) / Math.max(f.size, 1);
        note.textContent = Math.round(bar.value * 100) + " %";
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 200) {
          resolve();
        } else {
          const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
          const why = doc.querySelector(".refusal");
          reject(new Error(why ? why.textContent : "refused (" + xhr.status + ")"));
        }
      });
      xhr.addEventListener("error", () => reject(new Error("the connection broke; choose the file again to resume")));
      xhr.send(f.slice(held.held));
    });
  }
  bar.value = 1;
  note.textContent = "ready";
  return { sha256: sha256, name: f.name, media_type: f.type };
}

// Keeps what is typed in `form` for this tab (sessionStorage) until it is
// posted: acknowledging or retracting another message reloads the page.
function keepDraft(form) {
  const text = form.querySelector("#text");
  const key = "draft " + window.location.pathname;
  if (!text.value) {
    text.value = sessionStorage.getItem(key) || "";
  }
  text.addEventListener("input", () => sessionStorage.setItem(key, text.value));
  form.addEventListener("submit", () => sessionStorage.removeItem(key));
}

function compose(form) {
  const token = form.querySelector("input[name=token]").value;
  const chosen = form.querySelector("#files");
  const drop = form.querySelector("#drop");
  const list = form.querySelector("#uploads");
  const attachments = form.querySelector("#attachments");
  const post = form.querySelector("#post");
  // Uploaded files by the order they were chosen in (uploads end in any
  // order); the post names them in that order.
  const ready = [];
  let chosenSoFar = 0;
  let pending = 0;
  // Post waits for every upload, and is blocked while one failed: a
  // message must not go without a file its author chose.
  const settle = () => {
    post.disabled = pending > 0 || list.querySelector("li.failed") !== null;
  };
  const add = (files) => {
    for (const f of files) {
      const place = chosenSoFar++;
      const row = document.createElement("li");
      row.appendChild(span("name", f.name));
      row.appendChild(document.createElement("progress"));
      row.appendChild(span("note", ""));
      list.appendChild(row);
      pending += 1;
      post.disabled = true;
      upload(f, token, row)
        .then((named) => {
          ready[place] = named;
          attachments.value = JSON.stringify(ready.filter((r) => r));
        })
        .catch((e) => {
          row.classList.add("failed");
          row.querySelector(".note").textContent = e.message;
          // The bar stops where the upload did.
          row.querySelector("progress").removeAttribute("value");
          row.querySelector("progress").hidden = true;
          const drop = document.createElement("button");
          drop.type = "button";
          drop.textContent = "Remove";
          drop.addEventListener("click", () => {
            row.remove();
            settle();
          });
          row.appendChild(drop);
        })
        .finally(() => {
          pending -= 1;
          settle();
        });
    }
  };
  chosen.addEventListener("change", () => add(chosen.files));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    add(e.dataTransfer.files);
  });
}

// Replaces the element `id` with its copy in a fresh load of this page
// (the node renders it, escaped, as for the first load).
async function reload(id) {
  const answer = await fetch(window.location.href);
  if (!answer.ok) {
    return;
  }
  const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = doc.getElementById(id);
  const held = document.getElementById(id);
  if (fresh && held) {
    held.replaceWith(document.importNode(fresh, true));
  }
}

// Redraws an incident's picture whenever its channel brings an entry.
function picture(box) {
  const events = new EventSource(box.dataset.events);
  events.addEventListener("message", (e) => {
    if (JSON.parse(e.data).kind === "picture") {
      reload("picture").then(() => {
        const heading = document.getElementById("picture-heading");
        const count = document.querySelectorAll("#entries tbody tr").length;
        if (heading) {
          heading.textContent = "Situational picture (" + count + ")";
        }
      });
    }
  });
}

// Refreshes a receipts table from its own page every `data-refresh` ms.
function refresh(table) {
  setInterval(() => reload("receipts"), Number(table.dataset.refresh));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) {
        e.preventDefault();
      }
    });
  }
  // A FLASH message still waiting for this member's acknowledgement turns
  // the header red, as one arriving live does.
  if (document.querySelector("li.message.flash form.needs-ack")) {
    document.body.classList.add("alert");
  }
  const list = document.getElementById("messages");
  if (list) {
    watchArriving();
  }
  if (list && list.dataset.events) {
    live(list);
    // The newest page opens at its end: the latest messages and the form.
    if (!window.location.hash) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  }
  const form = document.getElementById("compose");
  if (form) {
    compose(form);
    keepDraft(form);
  }
  const receipts = document.getElementById("receipts");
  if (receipts) {
    refresh(receipts);
  }
  const box = document.getElementById("picture");
  if (box && box.dataset.events) {
    picture(box);
  }
});
