// groovyc/GroovyMain --configscript: puts the entries of -Dslidesam.groovy.classpath on the script's class path.
// qupath-groovy runs groovy.ui.GroovyMain directly, which ignores -cp (only the `groovy` launcher handles it).
configuration.classpath.addAll(System.getProperty("slidesam.groovy.classpath").split(File.pathSeparator))
