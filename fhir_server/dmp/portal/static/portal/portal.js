// Mon DMP: a little help on top of pages that work without it. A form sent once is not sent
// twice by an impatient second click (the action would run twice, and appear twice in the trail).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
  Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (button) {
    button.setAttribute("aria-disabled", "true");
  });
});
