// Reads files with QuPath's own classes and prints, as one JSON object on stdout, what QuPath made of them.
//   qupath-groovy read_with_qupath.groovy [--open-images] [class:NAME...] FILE...
// class:NAME: the colour QuPath gives the class NAME ("A: B" derived) when it creates it without one (done first,
// before any file creates classes), under "class:NAME".
// FILE.geojson / FILE.json: PathIO.readObjects (QuPath's "Import objects from file").
// project.qpproj: ProjectIO.loadProject, its path classes, and each image's hierarchy (entry.readHierarchy());
// with --open-images each image is also opened (entry.readImageData(): QuPath's image server for its URI).
// A file QuPath rejects gives {"error": "..."} instead of failing the whole run.
import com.google.gson.GsonBuilder
import java.awt.image.BufferedImage
import java.nio.file.Path
import org.locationtech.jts.geom.Polygon
import org.locationtech.jts.io.WKTWriter
import qupath.lib.common.ColorTools
import qupath.lib.io.PathIO
import qupath.lib.objects.PathAnnotationObject
import qupath.lib.objects.PathObject
import qupath.lib.objects.classes.PathClass
import qupath.lib.projects.ProjectIO

Class.forName('qupath.lib.images.servers.ImageServers')  // before ProjectIO.loadProject in plain Groovy

List<Integer> rgb(Integer packed) {
    packed == null ? null : [ColorTools.red(packed), ColorTools.green(packed), ColorTools.blue(packed)]
}

int holes(geometry) {
    (0..<geometry.numGeometries).sum { int i ->
        def part = geometry.getGeometryN(i)
        part instanceof Polygon ? ((Polygon) part).numInteriorRing : 0
    } as int
}

Map describe(PathObject object) {
    def roi = object.ROI
    def geometry = roi.geometry
    [
        type        : object.class.simpleName,
        id          : object.ID.toString(),
        name        : object.name,
        pathClass   : object.pathClass?.toString(),
        classColor  : rgb(object.pathClass?.color),
        color       : rgb(object.color),
        locked      : object.locked,
        description : object instanceof PathAnnotationObject ? ((PathAnnotationObject) object).description : null,
        metadata    : new TreeMap(object.metadata),
        measurements: object.measurementList.names.collectEntries { [(it): object.measurementList.get(it)] },
        roi         : roi.roiName,
        wkt         : new WKTWriter().write(geometry),
        points      : roi.isPoint() ? roi.allPoints.collect { [it.x, it.y] } : null,
        parts       : geometry.numGeometries,
        holes       : holes(geometry),
        children    : object.childObjects.collect { describe(it) },
    ]
}

Map readProject(File file, boolean openImages) {
    def project = ProjectIO.loadProject(file, BufferedImage)
    [
        version    : project.version,
        pathClasses: project.pathClasses.collect { [name: it.toString(), color: rgb(it.color)] },
        images     : project.imageList.collect { entry ->
            def image = [name: entry.imageName, uris: entry.URIs*.toString(), hasData: entry.hasImageData()]
            image.objects = entry.hasImageData() ? entry.readHierarchy().rootObject.childObjects.collect { describe(it) } : []
            if (openImages) {
                def server = entry.readImageData().server
                image.server = [type: server.serverType, width: server.width, height: server.height]
                server.close()
            }
            image
        },
    ]
}

boolean openImages = args.contains('--open-images')
def read = [:]
args.findAll { it.startsWith('class:') }.each { String name ->
    read[name] = [color: rgb(PathClass.fromString(name.substring(6)).color)]
}
args.findAll { it != '--open-images' && !it.startsWith('class:') }.each { String name ->
    try {
        read[name] = name.endsWith('.qpproj') ? readProject(new File(name), openImages)
                : [objects: PathIO.readObjects(Path.of(name)).collect { describe(it) }]
    } catch (Exception error) {
        read[name] = [error: error.toString()]
    }
}
println new GsonBuilder().serializeNulls().serializeSpecialFloatingPointValues().create().toJson(read)
