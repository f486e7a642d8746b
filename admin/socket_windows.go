package admin

// tempSocketName is plain tunvs.sock on Windows: the temporary directory
// is the user's own (%TEMP% under the profile), and Windows users have no
// uid.
func tempSocketName() string { return "tunvs.sock" }
