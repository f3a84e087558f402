"""The web console in a real browser (Chromium, driven by Playwright): a
member of police opens the console with their certificate (the PKCS#12
file `samband user add` writes) and posts; a
member of rescue, on rescue's node, sees it arrive live; a message of
`<script>` is shown as text, not run; a browser without a certificate, and
one with another org's, are refused; a cross-site form post is refused.
Screenshots go to the directory given, for docs/console.md.

usage: console.py POLICE_URL POLICE_BUNDLE RESCUE_URL RESCUE_BUNDLE CHANNEL SHOTS
"""
import json
import os
import pathlib
import struct
import sys
import time
import zlib

from playwright.sync_api import sync_playwright


def context(browser, url, bundle, p12=None, phone=False):
    """A browser context presenting `bundle`'s certificate (or the p12
    file) to `url`; `phone`: a phone-sized touch screen."""
    certs = []
    if p12 is not None:
        certs = [{"origin": url, "pfxPath": p12[0], "passphrase": p12[1]}]
    elif bundle is not None:
        certs = [{
            "origin": url,
            "certPath": str(bundle / "cert.pem"),
            "keyPath": str(bundle / "key.pem"),
        }]
    screen = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    return browser.new_context(client_certificates=certs, **(screen if phone else {}))


def png(width, height, rgb):
    """A real PNG image of one colour (RFC 2083), to post as a photo."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# One second of video (WebM), recorded by the browser itself from a canvas.
RECORD_WEBM = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 48;
  const g = canvas.getContext("2d");
  const recorder = new MediaRecorder(canvas.captureStream(10), {mimeType: "video/webm"});
  const parts = [];
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.start();
  for (let i = 0; i < 10; i++) {
    g.fillStyle = i % 2 ? "red" : "blue";
    g.fillRect(0, 0, 64, 48);
    await new Promise((r) => setTimeout(r, 100));
  }
  const stopped = new Promise((r) => recorder.onstop = r);
  recorder.stop();
  await stopped;
  return Array.from(new Uint8Array(await new Blob(parts).arrayBuffer()));
}"""

# Drops a file on the page's drop zone, as a person dragging it there does.
DROP = """([name, type, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: type}));
  const drop = document.getElementById("drop");
  drop.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
}"""


def wait_uploads(page, count):
    """Waits until `count` uploads of the form say ready; fails on one that failed."""
    deadline = time.monotonic() + 30
    while page.locator("#uploads li .note", has_text="ready").count() < count:
        failed = page.locator("#uploads li.failed")
        assert failed.count() == 0, failed.first.inner_text()
        assert time.monotonic() < deadline, page.locator("#uploads").inner_text()
        time.sleep(0.1)


def bottom(page, path):
    """A screenshot of what a person sees at the end of the page (a long
    channel is not shown whole)."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.screenshot(path=path, full_page=False)


def fits(page):
    """Whether the page fits its viewport's width (no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def main() -> None:
    police_url, police_bundle, rescue_url, rescue_bundle, channel, shots = sys.argv[1:7]
    police_bundle, rescue_bundle = pathlib.Path(police_bundle), pathlib.Path(rescue_bundle)
    shots = pathlib.Path(shots)
    figures = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")

        # Police's member, with the PKCS#12 file `user add` wrote: the
        # channel list, then the channel.
        p12 = (os.environ["POLICE_P12"], os.environ["POLICE_P12_PASSPHRASE"])
        police = context(browser, police_url, police_bundle, p12)
        page = police.new_page()
        loaded = []
        page.on("response", lambda r: loaded.append(r))
        started = time.monotonic()
        response = page.goto(police_url + "/")
        page.wait_for_load_state("load")
        figures["first_view_ms"] = round((time.monotonic() - started) * 1000, 1)
        # Time to first render, as the browser measured it (Paint Timing).
        # (Polled from here: the page's CSP forbids the eval a waiting
        # function would need.)
        paint, deadline = None, time.monotonic() + 5
        while paint is None and time.monotonic() < deadline:
            paint = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
            time.sleep(0.05)
        assert paint is not None, "the browser recorded no first contentful paint"
        figures["first_contentful_paint_ms"] = round(paint, 1)
        # Page weight: every body the first view loaded (the page, its
        # script and style sheet), and that nothing came from elsewhere.
        assert all(r.url.startswith(police_url) for r in loaded), [r.url for r in loaded]
        figures["first_view_kib"] = round(sum(len(r.body()) for r in loaded) / 1024, 1)
        figures["first_view_requests"] = len(loaded)
        assert response.status == 200, response.status
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
        page.get_by_role("link", name=channel).click()
        page.wait_for_selector("#messages")

        # Older history a page at a time: 60 log lines, 50 on a page.
        assert page.locator("li.message >> text=log line 0").count() == 0
        page.get_by_role("link", name="Older messages").click()
        page.wait_for_selector("li.message >> text=log line 0")
        page.get_by_role("link", name="Newest messages").click()
        page.wait_for_selector("li.message >> text=log line 59")

        # The live stream misses nothing: the newest page follows from
        # just after its last message, and a stream that reconnects (after
        # the node restarted, say) goes on after the last event it got,
        # whose id the browser sends as Last-Event-ID.
        events = page.locator("#messages").get_attribute("data-events")
        last = page.locator("li.message").last.get_attribute("data-cursor")
        assert events.endswith("/events?after=" + last), (events, last)
        after = page.locator("li.message", has_text="log line 57").get_attribute("data-cursor")
        replayed = page.evaluate("""async ([url, last]) => {
          const stop = new AbortController();
          const response = await fetch(url, {headers: {"Last-Event-ID": last}, signal: stop.signal});
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let text = "";
          const until = Date.now() + 10000;
          while (!text.includes("log line 59") && Date.now() < until) {
            const chunk = await Promise.race([
              reader.read(), new Promise((done) => setTimeout(() => done({}), 500))]);
            if (chunk.done) break;
            if (chunk.value) text += decoder.decode(chunk.value);
          }
          stop.abort();
          return text;
        }""", [events.split("?")[0], after])
        assert "log line 58" in replayed and "log line 59" in replayed, replayed
        assert "log line 57" not in replayed, replayed
        assert "id: " + after not in replayed, replayed

        # An URGENT message, then rescue's list: unread, with its marker.
        page.fill("#text", "Staging at the school")
        page.select_option("#priority", "urgent")
        page.click("#post")
        page.wait_for_selector("li.message.urgent >> text=Staging at the school")
        rescue = context(browser, rescue_url, rescue_bundle)
        watcher = rescue.new_page()
        row = watcher.locator(f'ul.channels li[data-channel="{channel}"]')
        deadline = time.monotonic() + 20
        while "61 new" not in (row.inner_text() if row.count() else ""):
            assert time.monotonic() < deadline, row.inner_text() if row.count() else "no row"
            time.sleep(0.3)
            watcher.goto(rescue_url + "/")
        assert row.locator(".badge.urgent").count() == 1, row.inner_text()
        assert row.locator(".badge.flash").count() == 0, row.inner_text()
        watcher.screenshot(path=str(shots / "channels.png"), full_page=True)

        # The exercise incident at rescue: marked EXERCISE in the list, on
        # its page and on its messages; its two channels listed; its
        # picture listed and plotted, and redrawn when police adds an entry.
        drill = os.environ["DRILL"]
        row = watcher.locator(f'ul.channels li[data-channel="{drill}"]')
        assert row.locator(".badge.exercise").count() == 1, row.inner_text()
        row.get_by_role("link", name="incident active").click()
        watcher.wait_for_selector("#picture")
        assert watcher.locator(".exercise-banner").count() == 1
        assert watcher.locator("#entries tbody tr").count() == 2
        assert watcher.locator("svg#plot g.entry").count() == 2
        assert watcher.locator("svg#plot polygon").count() == 1
        time.sleep(0.5)  # the event stream is open
        pathlib.Path(os.environ["PICTURE_READY"]).touch()
        watcher.wait_for_selector('#entries tr[data-key="late-unit"]', timeout=20000)
        assert watcher.locator("svg#plot g.entry").count() == 3
        headings = watcher.locator("h2").all_inner_texts()
        assert headings == ["Channels of the incident", "Situational picture (3)"], headings
        channels = watcher.locator("ul.incident-channels li")
        assert channels.count() == 2, channels.all_inner_texts()
        assert all(t.endswith("shared") for t in channels.all_inner_texts()), channels.all_inner_texts()
        watcher.screenshot(path=str(shots / "incident.png"), full_page=True)
        watcher.get_by_role("link", name="police.example/drill-medical").click()
        watcher.wait_for_selector("#messages")
        assert watcher.locator(".exercise-banner").count() == 1
        watcher.go_back()
        watcher.get_by_role("link", name=drill).click()
        watcher.wait_for_selector("#messages")
        assert watcher.locator(".exercise-banner").count() == 1
        marked = watcher.locator("li.message .flag.exercise").count()
        assert marked == watcher.locator("li.message").count() and marked > 0, marked

        # Rescue's member opens it (so it is read) and watches it live.
        watcher.goto(rescue_url + "/c/" + channel)
        watcher.wait_for_selector("#messages")
        time.sleep(0.5)  # the event stream is open

        text = "Road 73 closed at the bridge"
        page.fill("#text", text)
        page.select_option("#priority", "flash")
        page.select_option("#deadline", "600000")  # acknowledged within 10 minutes
        posted = time.monotonic()
        page.click("#post")
        page.wait_for_selector(f"li.message.flash >> text={text}")
        watcher.wait_for_selector(f"li.message.flash >> text={text}", timeout=20000)
        figures["live_update_ms"] = round((time.monotonic() - posted) * 1000, 1)
        # The deadline shows with the order, live and on the sender's page.
        for shown in (watcher, page):
            due = shown.locator("li.message.flash", has_text=text).locator(".due")
            assert due.count() == 1 and due.inner_text().startswith("due "), shown.url
        bottom(watcher, str(shots / "channel-partner.png"))

        # A message of markup is text.
        evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
        page.fill("#text", evil)
        page.click("#post")
        page.wait_for_selector("li.message >> text=<script>")
        assert page.evaluate("window.pwned") is None, "markup in a message ran"
        watcher.wait_for_selector("li.message >> text=<script>", timeout=20000)
        assert watcher.evaluate("window.pwned") is None, "markup in a live message ran"
        page.reload()
        bottom(page, str(shots / "channel.png"))

        # Rescue's member acknowledges the FLASH order (FLASH asks for it),
        # from the live view.
        # Opened afresh, a FLASH still waiting for this member turns the
        # header red too.
        watcher.reload()
        watcher.wait_for_load_state("load")
        assert watcher.evaluate("document.body.classList.contains('alert')"), "no FLASH alert"
        order = watcher.locator("li.message.flash", has_text=text)
        # A reply half typed survives acknowledging (the page reloads).
        watcher.fill("#text", "Half a reply")
        order.get_by_role("button", name="Acknowledge").click()
        watcher.wait_for_load_state()
        watcher.reload()
        watcher.wait_for_load_state("load")
        assert watcher.input_value("#text") == "Half a reply", "the draft was lost"
        watcher.fill("#text", "")
        # The acknowledgement is no order: not drawn as FLASH.
        acked = watcher.locator("li.message", has_text="acknowledged police.example#").last
        acked.wait_for()
        assert "flash" not in (acked.get_attribute("class") or ""), acked.get_attribute("class")
        assert acked.locator(".flag", has_text="FLASH").count() == 0, acked.inner_text()
        # Its order says acknowledgement was asked, no longer that it waits.
        asked = watcher.locator("li.message.flash", has_text=text)
        assert asked.locator(".flag.ask").count() == 0, asked.inner_text()
        assert asked.locator(".flag.asked").count() == 1, asked.inner_text()
        assert not watcher.evaluate("document.body.classList.contains('alert')"), "alert after ack"
        assert watcher.locator("li.message.flash", has_text=text).get_by_role(
            "button", name="Acknowledge").count() == 0, "still asked after acknowledging"

        # The FLASH is read live, so rescue's list shows nothing new.
        listing = rescue.new_page()
        listing.goto(rescue_url + "/")
        row = listing.locator(f'ul.channels li[data-channel="{channel}"]')
        assert row.locator(".unread").count() == 0, row.inner_text()

        # Police's member sees rescue's receipt and acknowledgement, and
        # replies from the message's page.
        page.locator("li.message.flash", has_text=text).get_by_role(
            "link", name="Receipts · reply").click()
        receipt = page.locator('#receipts tr[data-org="rescue.example"]')
        deadline = time.monotonic() + 20
        while "bo at" not in receipt.locator("td.acks").inner_text():
            assert time.monotonic() < deadline, receipt.inner_text()
            time.sleep(0.3)  # the table refreshes itself
        assert "delivered" in receipt.locator("td.state").inner_text(), receipt.inner_text()
        page.screenshot(path=str(shots / "receipts.png"), full_page=True)
        page.fill("#text", "Detour via road 12")
        page.click("#post")
        page.wait_for_selector("li.message >> text=Detour via road 12")
        reply = watcher.locator("li.message", has_text="Detour via road 12")
        reply.wait_for(timeout=20000)
        assert "reply to police.example#" in reply.inner_text(), reply.inner_text()

        # Files: a photo chosen, a video and a page of HTML dropped; each
        # uploaded with progress, then posted.
        photo = png(48, 32, (200, 30, 30))
        page.wait_for_load_state("load")  # the page's script listens for files
        page.set_input_files("#files", files=[
            {"name": "bridge.png", "mimeType": "image/png", "buffer": photo}])
        webm = bytes(page.evaluate(RECORD_WEBM))
        page.set_input_files("#files", files=[
            {"name": "drone.webm", "mimeType": "video/webm", "buffer": webm}])
        page.evaluate(DROP, ["plan.html", "text/html", "<script>window.pwned=1</script>"])
        wait_uploads(page, 3)
        # A name the post would be refused for is refused at once, before
        # any byte is sent, and Post waits until the file is removed.
        odd = police.new_page()
        odd.goto(police_url + "/c/" + channel)
        odd.wait_for_load_state("load")
        odd.evaluate(DROP, ["\u202egnp.exe", "application/octet-stream", "x"])
        odd.locator("#uploads li.failed").wait_for(timeout=10000)
        why = odd.locator("#uploads li.failed").inner_text()
        assert "control characters" in why, why
        assert odd.locator("#post").is_disabled(), "Post allowed with a refused file"
        odd.close()
        page.fill("#text", "Photo and drone video of the bridge")
        page.click("#post")
        sent = page.locator("li.message", has_text="Photo and drone video")
        sent.wait_for()
        # Named in the order they were chosen, however the uploads ended.
        names = sent.locator("figure.file figcaption a").all_inner_texts()
        assert names == ["bridge.png", "drone.webm", "plan.html"], names
        # At rescue, once the files have come across, on the page open all
        # along (no reload: it shows a file once it arrives): the photo
        # shown, the video playable, the HTML only a download.
        got = watcher.locator("li.message", has_text="Photo and drone video")
        got.wait_for(timeout=20000)
        got.locator("figure.file video").wait_for(state="attached", timeout=30000)
        got.locator("img[alt='bridge.png']").wait_for(state="attached", timeout=30000)
        deadline = time.monotonic() + 10
        while got.locator(".arriving").count() > 0:
            assert time.monotonic() < deadline, got.inner_text()
            time.sleep(0.2)
        # Each file says its size, as on a page the node renders.
        caption = got.locator("figure.file", has_text="plan.html").inner_text()
        assert "(31 bytes)" in caption, caption
        image = got.locator("img[alt='bridge.png']")
        image.scroll_into_view_if_needed()  # loaded when seen
        deadline = time.monotonic() + 10
        while image.evaluate("i => i.naturalWidth") != 48:
            assert time.monotonic() < deadline, "the photo is not shown"
            time.sleep(0.2)
        video = got.locator("video")
        played = video.evaluate("""async (v) => {
          v.muted = true;
          await v.play();
          await new Promise((r) => setTimeout(r, 300));
          return {ready: v.readyState, time: v.currentTime, error: v.error && v.error.code};
        }""")
        assert played["error"] is None and played["ready"] >= 2 and played["time"] > 0, played
        assert got.locator("figure.file", has_text="plan.html").locator("img, video, iframe").count() == 0
        got.screenshot(path=str(shots / "files.png"))
        plan = got.locator("figure.file a", has_text="plan.html").get_attribute("href")
        served = rescue.request.get(rescue_url + plan)
        assert served.status == 200 and served.body() == b"<script>window.pwned=1</script>"
        assert served.headers["content-disposition"].startswith("attachment"), served.headers
        assert served.headers["content-type"] == "application/octet-stream", served.headers
        assert "sandbox" in served.headers["content-security-policy"], served.headers
        video_url = rescue_url + video.get_attribute("src")
        part = rescue.request.get(video_url, headers={"Range": "bytes=4-9"})
        assert part.status == 206 and part.body() == webm[4:10], (part.status, part.headers)
        assert part.headers["content-range"] == f"bytes 4-9/{len(webm)}", part.headers

        # Police's member retracts the markup message, confirming first.
        page.on("dialog", lambda dialog: dialog.accept())
        mine = page.locator("li.message", has_text="<script>")
        mine.get_by_role("button", name="Retract").click()
        page.wait_for_selector("li.message >> text=retracted by alice@police.example")
        # At rescue, live: the message loses its text where it stands.
        watcher.wait_for_selector(
            "li.message >> text=retracted by alice@police.example", timeout=20000)
        assert watcher.locator("li.message", has_text="<script>").count() == 0

        # A cross-site form post, with and without a token, is refused.
        token = page.get_attribute("input[name=token]", "value")
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
        ):
            forged = police.request.post(
                police_url + "/c/" + channel + "/post",
                form={"token": token, "text": "forged", "priority": "normal"},
                headers=headers,
                max_redirects=0,
            )
            assert forged.status == 403, (headers, forged.status)
        no_token = police.request.post(
            police_url + "/c/" + channel + "/post",
            form={"token": "00", "text": "forged", "priority": "normal"},
            max_redirects=0,
        )
        assert no_token.status == 403, no_token.status
        for path in ("/post", "/ack", "/retract"):
            forged = police.request.post(
                police_url + "/c/" + channel + path,
                form={"token": token, "text": "forged", "priority": "normal", "cursor": "00"},
                headers={"Sec-Fetch-Site": "cross-site"},
                max_redirects=0,
            )
            assert forged.status == 403, (path, forged.status)
        page.reload()
        assert page.locator("li.message >> text=forged").count() == 0

        # The region's operator accepts police's offer, confirming first.
        region_url = os.environ["REGION_URL"]
        offer = os.environ["REGION_OFFER"]
        chief = context(browser, region_url, pathlib.Path(os.environ["REGION_ADMIN"]))
        ops = chief.new_page()
        ops.on("dialog", lambda dialog: dialog.accept())
        ops.goto(region_url + "/admin")
        row = ops.locator(f'tr[data-channel="{offer}"]')
        assert row.locator("td.state").inner_text() == "pending", row.inner_text()
        ops.screenshot(path=str(shots / "operations.png"), full_page=True)
        row.get_by_role("button", name="Accept").click()
        ops.wait_for_url(region_url + "/admin")
        deadline = time.monotonic() + 20
        while row.locator("td.state").inner_text() != "shared":
            assert time.monotonic() < deadline, row.inner_text()
            time.sleep(0.3)
            ops.reload()
        # On a phone, the operator's tables stack: every button in reach
        # without scrolling sideways.
        handheld = context(
            browser, region_url, pathlib.Path(os.environ["REGION_ADMIN"]), phone=True)
        small_ops = handheld.new_page()
        small_ops.goto(region_url + "/admin")
        assert fits(small_ops), "the operations page is wider than a phone"
        buttons = small_ops.locator("table button")
        assert buttons.count() > 0
        for i in range(buttons.count()):
            box = buttons.nth(i).bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390, (i, box)
        handheld.close()
        # The operator revokes a member, confirming first; the member's
        # browser is refused from then on.
        member = context(browser, region_url, pathlib.Path(os.environ["REGION_MEMBER"]))
        before = member.new_page()
        assert before.goto(region_url + "/").status == 200
        dana = ops.locator('tr[data-member="dana"]')
        dana.get_by_role("button", name="Revoke").click()
        ops.wait_for_url(region_url + "/admin")
        assert dana.locator("td.state").inner_text() == "revoked", dana.inner_text()
        try:
            answer = member.new_page().goto(region_url + "/")
            refused = answer is None or answer.status >= 400
        except Exception:  # the connection is refused
            refused = True
        assert refused, "a revoked member got in"
        # The audit log, verified, with the revocation in it.
        ops.get_by_role("link", name="Audit log").click()
        assert ops.locator("#verification.verified").count() == 1, ops.locator("#verification").inner_text()
        assert ops.locator("table.audit td", has_text="member.revoked").count() >= 1
        ops.screenshot(path=str(shots / "audit.png"), full_page=True)

        # A member is not an operator.
        member_ops = police.new_page()
        refused = member_ops.goto(police_url + "/admin")
        assert refused.status == 403, refused.status

        # No certificate, and another org's certificate: refused.
        for bundle in (None, rescue_bundle):
            stranger = context(browser, police_url, bundle).new_page()
            try:
                answer = stranger.goto(police_url + "/")
                refused = answer is None or answer.status >= 400
            except Exception:  # the handshake is refused
                refused = True
            assert refused, f"a browser with {bundle} got in"
        # On a phone-sized screen, by keyboard alone: rescue's member reads
        # the list, opens the channel and posts, never touching a mouse.
        phone = context(browser, rescue_url, rescue_bundle, phone=True)
        small = phone.new_page()
        small.goto(rescue_url + "/")
        assert fits(small), "the channel list is wider than a phone"
        for _ in range(50):
            small.keyboard.press("Tab")
            if small.evaluate("document.activeElement.textContent") == channel:
                break
        small.keyboard.press("Enter")
        small.wait_for_selector("#messages")
        assert fits(small), "the channel page is wider than a phone"
        for _ in range(400):
            small.keyboard.press("Tab")
            if small.evaluate("document.activeElement.id") == "text":
                break
        assert small.evaluate("document.activeElement.id") == "text", "the message box is not reachable by Tab"
        small.keyboard.type("Ambulance 3 at the bridge")
        small.keyboard.press("Tab")  # the priority
        small.keyboard.press("ArrowDown")  # URGENT
        for _ in range(10):
            small.keyboard.press("Tab")
            if small.evaluate("document.activeElement.id") == "post":
                break
        small.keyboard.press("Enter")
        small.wait_for_selector("li.message.urgent >> text=Ambulance 3 at the bridge")
        small.screenshot(path=str(shots / "phone.png"), full_page=False)

        # Police's admin closes the exercise incident from its page,
        # confirming first; a member is offered no such button, and the
        # partner's page shows it closed.
        incident_page = "/i/" + drill
        member_view = police.new_page()
        member_view.goto(police_url + incident_page)
        assert member_view.get_by_role("button", name="Close the incident").count() == 0
        by_member = police.request.post(
            police_url + incident_page + "/close", form={"token": token}, max_redirects=0)
        assert by_member.status == 403, by_member.status
        police_chief = context(browser, police_url, pathlib.Path(os.environ["POLICE_ADMIN"]))
        closing = police_chief.new_page()
        closing.on("dialog", lambda dialog: dialog.accept())
        closing.goto(police_url + incident_page)
        close_token = closing.get_attribute("form[action$='/close'] input[name=token]", "value")
        forged = police_chief.request.post(
            police_url + incident_page + "/close",
            form={"token": close_token},
            headers={"Sec-Fetch-Site": "cross-site"},
            max_redirects=0,
        )
        assert forged.status == 403, forged.status
        closing.reload()
        assert closing.locator("p.incident-state .state").inner_text() == "active"
        closing.get_by_role("button", name="Close the incident").click()
        closing.wait_for_url(police_url + incident_page)
        assert closing.locator("p.incident-state .state").inner_text() == "closed", \
            closing.locator("p.incident-state").inner_text()
        assert closing.get_by_role("button", name="Close the incident").count() == 0
        partner = rescue.new_page()
        deadline = time.monotonic() + 20
        while True:
            partner.goto(rescue_url + incident_page)
            if partner.locator("p.incident-state .state").inner_text() == "closed":
                break
            assert time.monotonic() < deadline, partner.locator("p.incident-state").inner_text()
            time.sleep(0.3)
        browser.close()
    print(json.dumps(figures))
    print("console ok")


main()
