// Greets the user on the page.
function greet(name) {
  return `hello, ${name}`;
}
module.exports = { greet };
