// A syntax error.
function oops( {
