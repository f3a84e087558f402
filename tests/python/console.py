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
import sys
import time

from playwright.sync_api import sync_playwright


def context(browser, url, bundle, p12=None):
    certs = []
    if p12 is not None:
        certs = [{"origin": url, "pfxPath": p12[0], "passphrase": p12[1]}]
    elif bundle is not None:
        certs = [{
            "origin": url,
            "certPath": str(bundle / "cert.pem"),
            "keyPath": str(bundle / "key.pem"),
        }]
    return browser.new_context(client_certificates=certs)


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

        # Rescue's member on rescue's node, watching the same channel.
        rescue = context(browser, rescue_url, rescue_bundle)
        watcher = rescue.new_page()
        watcher.goto(rescue_url + "/c/" + channel)
        watcher.wait_for_selector("#messages")
        time.sleep(0.5)  # the event stream is open

        text = "Road 73 closed at the bridge"
        page.fill("#text", text)
        page.select_option("#priority", "flash")
        posted = time.monotonic()
        page.click("#post")
        page.wait_for_selector(f"li.message.flash >> text={text}")
        watcher.wait_for_selector(f"li.message.flash >> text={text}", timeout=20000)
        figures["live_update_ms"] = round((time.monotonic() - posted) * 1000, 1)
        watcher.screenshot(path=str(shots / "channel-partner.png"), full_page=True)

        # A message of markup is text.
        evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
        page.fill("#text", evil)
        page.click("#post")
        page.wait_for_selector("li.message >> text=<script>")
        assert page.evaluate("window.pwned") is None, "markup in a message ran"
        watcher.wait_for_selector("li.message >> text=<script>", timeout=20000)
        assert watcher.evaluate("window.pwned") is None, "markup in a live message ran"
        page.reload()
        page.screenshot(path=str(shots / "channel.png"), full_page=True)

        # Rescue's member acknowledges the FLASH order (FLASH asks for it),
        # from the live view.
        order = watcher.locator("li.message.flash", has_text=text)
        order.get_by_role("button", name="Acknowledge").click()
        watcher.wait_for_load_state()
        watcher.reload()
        assert watcher.locator("li.message.flash", has_text=text).get_by_role(
            "button", name="Acknowledge").count() == 0, "still asked after acknowledging"

        # Police's member retracts the markup message, confirming first.
        page.on("dialog", lambda dialog: dialog.accept())
        mine = page.locator("li.message", has_text="<script>")
        mine.get_by_role("button", name="Retract").click()
        page.wait_for_selector("li.message >> text=retracted by alice@police.example")
        deadline = time.monotonic() + 20
        while watcher.locator("li.message >> text=retracted by alice@police.example").count() == 0:
            assert time.monotonic() < deadline, "the retraction did not reach rescue"
            time.sleep(0.3)
            watcher.reload()
        assert watcher.locator("li.message", has_text="<script>").count() == 0

        # A cross-site form post, with and without a token, is refused.
        token = page.get_attribute("input[name=token]", "value")
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
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
        browser.close()
    print(json.dumps(figures))
    print("console ok")


main()
